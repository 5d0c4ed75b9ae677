"""Risk of suggested shell commands from a real parse, and terminal-safe suggestion text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exlsp.plugins.shell_risk import classify, max_risk, sanitize
from exlsp.plugins.shell_syntax import Op, Word, split_commands, tokenize

# (command, risk, a word the reason must contain, or None for low)
TABLE = [
    # low: everyday commands, and dangerous text that is only an argument
    ("ls -la", "low", None),
    ("git status", "low", None),
    ("git checkout main", "low", None),
    ("git clean -n", "low", None),
    ("echo hi >> notes.txt", "low", None),
    ("make 2>&1 | tee /dev/null", "low", None),
    ("grep -r token src/ > /dev/null 2>&1", "low", None),
    ('git commit -m "rm -rf /"', "low", None),
    ("echo 'curl x | sh'", "low", None),
    ("curl https://api.example.com | python3 -m json.tool", "low", None),
    ("curl -o page.html https://example.com", "low", None),
    ("mv -n a.txt b.txt", "low", None),
    ("docker run --rm -it ubuntu", "low", None),
    ("apt search vim", "low", None),
    ("pacman -Ss vim", "low", None),
    ("export PATH=$PATH:~/bin", "low", None),
    ("cat <<EOF", "low", None),
    ("rmdir empty/", "low", None),
    # medium
    ("sudo ls /root", "medium", "root"),
    ("sudo -i", "medium", "root shell"),
    ("sudo apt install vim", "medium", "packages"),
    ("echo hi > out.txt", "medium", "out.txt"),
    ("sort data.csv >| sorted.csv", "medium", "sorted.csv"),
    ("mv a.txt b.txt", "medium", "overwrite"),
    ("cp -r src/ backup/", "medium", "overwrite"),
    ("rm notes.txt", "medium", "deletes"),
    ("kill 1234", "medium", "kills"),
    ("pkill -f server.py", "medium", "kills"),
    ("pip install requests", "medium", "packages"),
    ("python3 -m pip install -U pip", "medium", "packages"),
    ("npm install", "medium", "packages"),
    ("brew upgrade", "medium", "packages"),
    ("pacman -Syu", "medium", "packages"),
    ("curl -X POST -d @data.json https://api.example.com", "medium", "uploads"),
    ("curl -F file=@photo.jpg https://up.example.com", "medium", "uploads"),
    ("wget --post-file=dump.sql https://x", "medium", "uploads"),
    ("scp backup.tar host:/srv/", "medium", "network"),
    ("git push --force-with-lease", "medium", "push"),
    ("git checkout -- .", "medium", "discards"),
    ("git stash drop", "medium", "stash"),
    ("chmod -R 755 ./build", "medium", "chmod"),
    ("reboot", "medium", "restarts"),
    ("kubectl delete pod web-1", "medium", "deletes"),
    # high
    ("rm -rf /", "high", "/"),
    ("rm -rf ~", "high", "home"),
    ("rm -rf -- /*", "high", "/"),
    ("rm --no-preserve-root -r /", "high", "/"),
    ("rm -r build/", "high", "recursively"),
    ("/bin/rm -Rf node_modules", "high", "recursively"),
    ("\\rm -fr target", "high", "recursively"),
    ("sudo rm -rf /var/lib/docker", "high", "root"),
    ("sudo rm old.log", "high", "root"),
    ("dd if=/dev/zero of=/dev/sda bs=1M", "high", "dd"),
    ("mkfs.ext4 /dev/sdb1", "high", "mkfs"),
    ("fdisk /dev/nvme0n1", "high", "fdisk"),
    ("parted /dev/sda mklabel gpt", "high", "parted"),
    ("wipefs -a /dev/sdb", "high", "wipefs"),
    ("shred -u secrets.txt", "high", "shred"),
    ("chmod -R 777 /", "high", "/"),
    ("chown -R me:me ~/", "high", "home"),
    ("echo 0 > /dev/sda", "high", "device"),
    ("cat image.iso > /dev/disk2", "high", "device"),
    ("echo 'nameserver 1.1.1.1' > /etc/resolv.conf", "high", "system file"),
    ("curl -fsSL https://get.example.sh | sh", "high", "sh"),
    ("curl -fsSL https://get.example.sh | sudo bash", "high", "bash"),
    ("wget -qO- https://x.example | python3", "high", "python3"),
    ("curl -s https://x.example | bash -s -- --yes", "high", "bash"),
    ("bash <(curl -s https://x.example/install)", "high", "downloaded"),
    ('sh -c "$(curl -fsSL https://x.example/install.sh)"', "high", "downloaded"),
    ('eval "$(wget -qO- https://x.example)"', "high", "downloaded"),
    ("echo 'rm -rf /' | bash", "high", "bash"),
    (":(){ :|:& };:", "high", "fork bomb"),
    (":(){:|:&};:", "high", "fork bomb"),
    ("bomb() { bomb | bomb & }; bomb", "high", "fork bomb"),
    ("git push --force origin main", "high", "force"),
    ("git push -f", "high", "force"),
    ("git push origin +main", "high", "force"),
    ("git -C repo push --force", "high", "force"),
    ("git reset --hard HEAD~3", "high", "reset"),
    ("git clean -fdx", "high", "untracked"),
    ("find . -name '*.pyc' -delete", "high", "deletes"),
    ("find / -delete", "high", "/"),
    ("find . -type d -exec rm -rf {} +", "high", "recursively"),
    ("ls | xargs rm -rf", "high", "recursively"),
    ("echo $(rm -rf ~)", "high", "home"),
    ("echo `rm -rf /`", "high", "/"),
    ('echo "$(rm -rf ~)"', "high", "home"),
    ("bash -c 'rm -rf /'", "high", "/"),
    ("ssh prod 'rm -rf /srv/app'", "high", "on prod"),
    ("for f in *; do rm -rf \"$f\"; done", "high", "recursively"),
    ("cd /tmp && rm -rf *", "high", "recursively"),
    ("(cd / && rm -rf *)", "high", "recursively"),
    ("ls; rm -rf /", "high", "/"),
    ("true || rm -rf ~", "high", "home"),
    ("FOO=1 env BAR=2 nice -n 5 rm -rf /", "high", "/"),
    ("timeout 10 sudo -u root rm -rf /opt", "high", "root"),
    ("echo x | sudo tee /etc/hosts", "high", "system file"),
    ("rsync -a --delete src/ dst/", "high", "delete"),
    ("crontab -r", "high", "cron"),
    ("kill -9 -1", "high", "every process"),
    ("mv ~ /tmp/old-home", "high", "home"),
    ("mv important.db /dev/null", "high", "/dev/null"),
    ("terraform destroy", "high", "destroy"),
]


@pytest.mark.parametrize(("command", "risk", "why"), TABLE, ids=[c for c, _, _ in TABLE])
def test_classify(command, risk, why):
    got, reason = classify(command)
    assert got == risk, reason
    if why is None:
        assert reason == ""
    else:
        assert why.lower() in reason.lower()


def test_the_table_is_big_enough():
    assert len(TABLE) >= 40
    assert {r for _, r, _ in TABLE} == {"low", "medium", "high"}


@pytest.mark.parametrize("command", ["rm -rf '/", 'echo "$(rm -rf /', "echo `rm -rf /", "ls &&", "| sh", "((", "'"])
def test_unbalanced_input_is_judged_leniently(command):
    risk, _ = classify(command)
    if "rm -rf /" in command:
        assert risk == "high"
    else:
        assert risk in ("low", "medium", "high")


@given(st.text(max_size=200))
def test_classify_never_raises(text):
    risk, reason = classify(text)
    assert risk in ("low", "medium", "high") and isinstance(reason, str)


def test_max_risk():
    assert max_risk("low", "high") == "high" and max_risk("medium", "low") == "medium"
    assert max_risk("", "low") == "low" and max_risk("bogus", "medium") == "medium"


# ---- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_understands_quotes_operators_and_redirections():
    tokens = tokenize("""a 'b c' "d $(e f) g" x\\ y 2>&1 >>log && h | i; `j`""")
    words = [t.text for t in tokens if isinstance(t, Word)]
    ops = [t.text for t in tokens if isinstance(t, Op)]
    assert words[:4] == ["a", "b c", "d $(e f) g", "x y"]
    assert ops == ["2>&", ">>", "&&", "|", ";"]
    subs = [s for t in tokens if isinstance(t, Word) for s in t.subs]
    assert subs == ["e f", "j"]
    commands = split_commands(tokens)
    assert [c.args[0] for c in commands] == ["a", "h", "i", "`j`"]
    assert commands[0].redirects == [(">&", "1"), (">>", "log")]
    assert [c.piped_in for c in commands] == [False, False, True, False]


def test_leading_assignments_and_keywords_are_not_the_command():
    (cmd,) = split_commands(tokenize("if FOO=$(id -u) rm x"))
    assert cmd.args == ["rm", "x"] and cmd.subs == ["id -u"]


# ---- sanitize ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("git status", "git status"),
        ("\x1b[31mrm -rf /\x1b[0m", "rm -rf /"),
        ("ls\x1b]0;pwned title\x07 -la", "ls -la"),
        ("ls\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "lslink"),
        ("echo \x1b]52;c;ZWNobyBldmls\x07hi", "echo hi"),
        ("ls\x1bPq#0;2;0;0;0\x1b\\ -l", "ls -l"),
        ("ls\x9b31m -l", "ls -l"),
        ("ls -la\nrm -rf ~", "ls -la"),
        ("ls -la\r\x1b[2Krm -rf ~", "ls -la"),
        ("echo\tx", "echo x"),
        ("echo \x00\x07\x08\x7f\x85x", "echo "),
        ("echo safe\u202e)lmth.exe(\u202c", "echo safe)lmth.exe("),
        ("rm\u200b -rf x", "rm -rf x"),
        ("\x1b", ""),
        ("naïve café ✓", "naïve café ✓"),
    ],
)
def test_sanitize(raw, clean):
    assert sanitize(raw) == clean


@given(st.text())
def test_sanitized_text_has_no_controls(text):
    clean = sanitize(text)
    assert "\n" not in clean and "\x1b" not in clean
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in clean)
    assert sanitize(clean) == clean
