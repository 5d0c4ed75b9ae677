"""End-to-end: the shell integrations (editors/shell/) against a real `exlsp daemon`, in real shells
driven through tmux. What is checked is the mechanics, never the quality of the tiny model's
suggestions: the line typed goes out, the daemon's answer comes back as ghost text (zsh) or as the
new line (bash, fish), accepting fills the line, and nothing is ever executed.

Needs zsh, bash, fish, tmux, socat, nc and a C compiler (see .ci/run). The protocol helpers of the
scripts (JSON building and parsing) are checked first, without a model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import msgspec
import pytest

from exlsp.lsp import wire
from exlsp.lsp.shell_setup import build_client, shell_dir
from exlsp.lsp.socket_paths import is_live

SHELL_DIR = shell_dir()
ZSH_SCRIPT = SHELL_DIR / "exlsp.zsh"
BASH_SCRIPT = SHELL_DIR / "exlsp.bash"
FISH_SCRIPT = SHELL_DIR / "exlsp.fish"
TOOLS = ("zsh", "bash", "fish", "tmux", "socat", "nc")

# The tools are part of the test environment (.ci/run installs them): missing ones fail.
for _tool in TOOLS:
    if shutil.which(_tool) is None:
        raise RuntimeError(f"{_tool} is needed by the shell end-to-end tests (apt-get install zsh fish tmux socat netcat-openbsd)")

TRICKY = ['git commit -m "fix \\"quoted\\" \\\\ path"', "echo é ü 漢字 😀", "tab\there", "ctl\x01\x1f\x7fend", "a/b\\c\\\\", ""]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05,
             show: Callable[[], str] | None = None):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{show() if show else ''}")
        time.sleep(interval)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EXLSP_SOCKET", "TMUX", "TMUX_PANE", "EXLSP_CLIENT")}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8", **extra)
    return env


# ---- the protocol helpers, without a model ---------------------------------------------------------


def zsh_eval(script: str, env: dict[str, str] | None = None, args: list[str] = ()) -> str:
    code = f"source {ZSH_SCRIPT} || exit 9\n{script}"
    done = subprocess.run(["zsh", "-f", "-i", "-c", code, "zsh", *args], capture_output=True, text=True,
                          env=env or clean_env(), stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_zsh_builds_requests_the_server_accepts():
    out = zsh_eval('for s in "$@"; do _exlsp_request complete "$s" 7; print -r -- "$REPLY"; done', args=TRICKY)
    lines = out.splitlines()
    assert len(lines) == len(TRICKY)
    for line, text in zip(lines, TRICKY):
        request = wire.decode_request(line.encode())
        assert isinstance(request, wire.SuggestRequest)
        assert request.buffer == text
        assert request.shell == "zsh" and request.candidates == 1 and request.id == 7
        assert request.cursor == len(text)
        assert not any(ch < " " for ch in line)  # one line, control characters escaped


def test_zsh_parses_replies_like_msgspec_writes_them():
    texts = ['git commit -m "a \\"b\\" \\\\"', "echo é 漢字 😀", "x/y", "back\\slash\\\\", "quote\"end\""]
    lines = []
    for i, text in enumerate(texts):
        reply = wire.DoneReply(id=i, suggestions=[wire.Suggestion(text=text, risk="high", reason=f"why {i} \"q\"")])
        lines.append(wire.encode(reply).decode().rstrip("\n"))
    lines.append('{"type":"done","id":99,"suggestions":[{"text":"\\u00e9\\u0041\\/","risk":"low","reason":""}]}')
    lines.append('{"type":"error","id":5,"code":"internal","message":"boom"}')
    lines.append('{"type":"done","id":6,"suggestions":[]}')
    script = "\n".join(
        f"_exlsp_parse {_zsh_quote(line)}; print -r -- \"$? [$_exlsp_r_type] [$_exlsp_r_id] [$_exlsp_r_text] [$_exlsp_r_risk] [$_exlsp_r_reason]\""
        for line in lines
    )
    got = zsh_eval(script).splitlines()
    for i, text in enumerate(texts):
        assert got[i] == f'0 [done] [{i}] [{text}] [high] [why {i} "q"]'
    assert got[len(texts)] == "0 [done] [99] [éA/] [low] []"
    assert got[len(texts) + 1] == "0 [error] [5] [] [low] []"
    assert got[len(texts) + 2] == "0 [done] [6] [] [low] []"


def _zsh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def test_scripts_stay_quiet_without_a_daemon(tmp_path):
    env = clean_env(EXLSP_SOCKET=str(tmp_path / "none.sock"), HOME=str(tmp_path))
    out = zsh_eval("local suggestion; _zsh_autosuggest_strategy_exlsp 'git ch'; print -r -- \"[$suggestion]\"", env)
    assert out == "[]\n"
    client = build_client(tmp_path / "exlsp-client")
    done = subprocess.run([client, "suggest", "git ch"], capture_output=True, text=True, env=env, timeout=10)
    assert done.returncode == 3 and "no exlsp process is running" in done.stderr and done.stdout == ""
    assert subprocess.run([client], capture_output=True, env=env, timeout=10).returncode == 2
    bash = subprocess.run(["bash", "--noprofile", "--norc", "-ic", f"source {BASH_SCRIPT}; _exlsp_ask complete 'git ch'; echo rc=$?"],
                          capture_output=True, text=True, env=dict(env, EXLSP_CLIENT=str(client)), stdin=subprocess.DEVNULL, timeout=30)
    assert bash.stdout.strip() == "rc=3"


def test_c_client_escapes_and_decodes(tmp_path):
    """The C client against a stand-in server that echoes the request back as a suggestion."""
    import socket
    import threading

    client = build_client(tmp_path / "exlsp-client")
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    seen: list[wire.SuggestRequest] = []

    def serve() -> None:
        for _ in TRICKY[:-1]:
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as f:
                req = wire.decode_request(f.readline())
                seen.append(req)  # type: ignore[arg-type]
                reply = wire.DoneReply(id=req.id, suggestions=[wire.Suggestion(text=req.buffer.replace("\t", " "), risk="medium", reason="r")])
                conn.sendall(b'{"type":"delta","id":1,"text":"x"}\n' + wire.encode(reply))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    for text in TRICKY[:-1]:
        done = subprocess.run([client, "-p", "-s", str(path), "-H", "ls", "-H", 'say "hi"', "-x", "1", "-C", "/x y", "suggest", text],
                              capture_output=True, timeout=10)
        assert done.returncode == 0, done.stderr
        risk, shown, reason = done.stdout.decode().split("\n")[:3]
        expected = "".join(" " if ch < " " or ch == "\x7f" else ch for ch in text)
        assert (risk, shown, reason) == ("medium", expected, "r")
    t.join(5)
    server.close()
    assert [r.buffer for r in seen] == TRICKY[:-1]
    assert seen[0].history == ["ls", 'say "hi"'] and seen[0].exit_status == 1 and seen[0].cwd == "/x y"
    assert seen[0].shell == "bash" and seen[0].candidates == 1


def test_shell_init_prints_the_source_line_and_builds_the_client_once(tmp_path, monkeypatch, capsys):
    from exlsp.lsp import shell_setup

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    import argparse

    parser = argparse.ArgumentParser()
    shell_setup.add_parser(parser.add_subparsers(dest="command"))
    assert shell_setup.run(parser.parse_args(["shell-init", "zsh"])) == 0
    assert capsys.readouterr().out == f"source {ZSH_SCRIPT}\n"
    client = tmp_path / "data" / "exlsp" / "bin" / "exlsp-client"
    assert shell_setup.run(parser.parse_args(["shell-init", "bash"])) == 0
    out = capsys.readouterr()
    assert out.out == f"export EXLSP_CLIENT={client}\nsource {BASH_SCRIPT}\n" and "built" in out.err
    assert os.access(client, os.X_OK)
    assert shell_setup.run(parser.parse_args(["shell-init", "fish"])) == 0
    out = capsys.readouterr()
    assert out.out == f"set -gx EXLSP_CLIENT {client}\nsource {FISH_SCRIPT}\n" and out.err == ""  # built once
    assert shell_setup.run(parser.parse_args(["shell-init", "systemd"])) == 0
    unit = capsys.readouterr().out
    assert "Restart=on-failure" in unit
    exec_start = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1 and exec_start[0].endswith(" daemon --no-demo")


# ---- against the real daemon ------------------------------------------------------------------------


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "run"
        self.runtime.mkdir(mode=0o700)
        (root / "config").mkdir()
        self.env = clean_env(XDG_RUNTIME_DIR=str(self.runtime), XDG_CONFIG_HOME=str(root / "config"))
        self.socket = self.runtime / "exlsp" / "exlsp.sock"
        self.log = open(root / "daemon.log", "w+b")
        # One thread: on a busy 2-core machine llama.cpp's spinning threads slow down by 10x.
        self.proc = subprocess.Popen([sys.executable, "-m", "exlsp", "daemon", "--no-demo", "--threads", "1"],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise AssertionError(f"exlsp daemon exited: {self.log.read().decode(errors='replace')[-2000:]}")
            return self.socket.exists() and is_live(self.socket, 0.5)

        wait_for(ready, 120, "the daemon's socket")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("sh"))
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Path:
    return build_client(tmp_path_factory.mktemp("bin") / "exlsp-client")


def ask(client: Path, daemon: Daemon, shell: str, cwd: Path, buffer: str) -> wire.DoneReply:
    """What the daemon answers for the request the shell sends (same shell, cwd, exit status 0,
    no history, one candidate)."""
    done = subprocess.run([client, "-r", "-t", "60000", "-S", shell, "-C", str(cwd), "-x", "0", "suggest", buffer],
                          capture_output=True, text=True, env=daemon.env, timeout=90)
    assert done.returncode == 0, done.stderr
    return msgspec.json.decode(done.stdout.strip().encode(), type=wire.DoneReply)


def expected_text(client: Path, daemon: Daemon, shell: str, cwd: Path, buffer: str) -> tuple[str, bool]:
    """The daemon's first suggestion for ``buffer``, and whether it answered the same twice
    (greedy decoding is deterministic; if the two differ, only the mechanics are checked)."""
    a, b = (ask(client, daemon, shell, cwd, buffer) for _ in range(2))
    first = a.suggestions[0].text if a.suggestions else ""
    return first, bool(a.suggestions) and a.suggestions == b.suggestions


class Tmux:
    """A private tmux server (its own socket file, like -L but inside the test's directory, so that
    nothing is left in /tmp/tmux-UID) with one pane running ``command``."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.socket = cwd.parent / f"tmux-{uuid.uuid4().hex[:8]}"
        self.tmux = ["tmux", "-S", str(self.socket)]
        subprocess.run([*self.tmux, "-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "30", "-c", str(cwd), *command],
                       env=env, check=True, timeout=10)

    def send(self, *keys: str, literal: bool = False) -> None:
        subprocess.run([*self.tmux, "send-keys", *(["-l"] if literal else []), *keys], check=True, timeout=10)

    def lines(self) -> list[str]:
        done = subprocess.run([*self.tmux, "capture-pane", "-p"], capture_output=True, text=True, timeout=10)
        return done.stdout.splitlines()

    def prompt_line(self, prompt: str) -> str | None:
        # capture-pane drops trailing spaces: an empty line shows as "READY>".
        found = [line.rstrip() for line in self.lines() if line.startswith(prompt.rstrip())]
        return found[-1] if found else None

    def dump(self) -> str:
        return "\n--- the pane:\n" + "\n".join(self.lines())

    def kill(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=10)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def tmux_sessions():
    sessions: list[Tmux] = []
    yield sessions
    for s in sessions:
        s.kill()


def read_when_written(path: Path, timeout: float = 10) -> str:
    return wait_for(lambda: path.exists() and path.read_text().endswith("\n") and path.read_text(), timeout, f"{path.name}")[:-1]


@pytest.mark.model
def test_zsh_ghost_text_accept_and_nothing_runs(daemon, client, tmp_path, tmux_sessions):
    home = tmp_path / "zdot"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (home / ".zshrc").write_text(
        f"""PS1='READY> '
HISTFILE={home}/.zsh_history
source {ZSH_SCRIPT}
preexec() {{ print -r -- "$1" >> {home}/ran }}
_e2e_dump() {{ print -r -- "$BUFFER" > {home}/buffer }}
zle -N _e2e_dump
bindkey '^X^D' _e2e_dump
"""
    )
    expected, deterministic = expected_text(client, daemon, "zsh", work, "git ch")
    assert expected.startswith("git ch")
    pane = Tmux(["zsh"], dict(daemon.env, ZDOTDIR=str(home), HOME=str(home)), work)
    tmux_sessions.append(pane)
    wait_for(lambda: pane.prompt_line("READY> ") is not None, 15, "the zsh prompt", show=pane.dump)
    pane.send("git ch", literal=True)
    if expected == "git ch":  # nothing to add: no ghost text, and that is all there is to see
        pytest.skip("the model suggested nothing beyond the typed line")
    shown = wait_for(lambda: (line := pane.prompt_line("READY> ")) and len(line) > len("READY> git ch") and line,
                     30, "ghost text after 'git ch'", show=pane.dump)
    assert shown.startswith("READY> git ch")
    if deterministic:
        # The whole ghost text is the daemon's suggestion (plus a risk hint when it is risky).
        assert shown[len("READY> "):].startswith(expected.rstrip())
    pane.send("Right")
    pane.send("C-x", "C-d")
    filled = read_when_written(home / "buffer")
    assert filled.startswith("git ch") and len(filled) > len("git ch")
    if deterministic:
        assert filled == expected
    assert wait_for(lambda: pane.prompt_line("READY> ") == f"READY> {filled}".rstrip(), 5, "the filled line", show=pane.dump)

    # Ctrl-G: a description goes out in describe mode; whatever comes back, nothing runs.
    pane.send("C-u")
    pane.send("list files", literal=True)
    pane.send("C-g")
    wait_for(lambda: any("exlsp: no suggestion" in line for line in pane.lines())
             or not (pane.prompt_line("READY> ") or "READY> list files").startswith("READY> list files"),
             30, "an answer to Ctrl-G", show=pane.dump)
    assert not (home / "ran").exists(), "a command was executed"


@pytest.mark.model
def test_zsh_autosuggestions_strategy(daemon, client, tmp_path):
    expected, deterministic = expected_text(client, daemon, "zsh", tmp_path, "git ch")
    out = subprocess.run(
        ["zsh", "-f", "-i", "-c", f"source {ZSH_SCRIPT}; EXLSP_STRATEGY_TIMEOUT=30; local suggestion; "
         "_zsh_autosuggest_strategy_exlsp 'git ch'; print -r -- \"$suggestion\""],
        capture_output=True, text=True, env=dict(daemon.env, HOME=str(tmp_path)), cwd=tmp_path, stdin=subprocess.DEVNULL,
        timeout=60,
    ).stdout.rstrip("\n")
    assert out.startswith("git ch")
    if deterministic:
        assert out == expected


@pytest.mark.model
def test_bash_key_fills_readline_line_and_nothing_runs(daemon, client, tmp_path, tmux_sessions):
    work = tmp_path / "work"
    work.mkdir()
    rc = tmp_path / "bashrc"
    rc.write_text(
        f"""PS1='READY$ '
HISTFILE={tmp_path}/bash_history
PS0='$(echo ran >> {tmp_path}/ran)'
export EXLSP_CLIENT={client}
source {BASH_SCRIPT}
bind -x '"\\C-x\\C-d": printf "%s\\n" "$READLINE_LINE" > {tmp_path}/buffer'
"""
    )
    expected, deterministic = expected_text(client, daemon, "bash", work, "git ch")
    pane = Tmux(["bash", "--noprofile", "--rcfile", str(rc), "-i"], dict(daemon.env, HOME=str(tmp_path)), work)
    tmux_sessions.append(pane)
    wait_for(lambda: pane.prompt_line("READY$ ") is not None, 15, "the bash prompt", show=pane.dump)
    pane.send("git ch", literal=True)
    wait_for(lambda: pane.prompt_line("READY$ ") == "READY$ git ch", 5, "the typed line", show=pane.dump)
    pane.send("M-/")
    pane.send("C-x", "C-d")
    filled = read_when_written(tmp_path / "buffer", 60)
    assert filled.startswith("git ch")
    if deterministic:
        assert filled == expected
    assert wait_for(lambda: pane.prompt_line("READY$ ") == f"READY$ {filled}".rstrip(), 5, "the filled line", show=pane.dump)
    assert not (tmp_path / "ran").exists(), "a command was executed"


@pytest.mark.model
def test_fish_key_replaces_commandline_and_nothing_runs(daemon, client, tmp_path, tmux_sessions):
    work = tmp_path / "work"
    work.mkdir()
    config = tmp_path / "config" / "fish"
    config.mkdir(parents=True)
    (config / "config.fish").write_text(
        f"""function fish_prompt; echo -n 'READY> '; end
function fish_right_prompt; end
function fish_greeting; end
function __e2e_preexec --on-event fish_preexec; echo $argv >> {tmp_path}/ran; end
set -gx EXLSP_CLIENT {client}
source {FISH_SCRIPT}
bind \\cx\\cd 'commandline > {tmp_path}/buffer'
"""
    )
    expected, deterministic = expected_text(client, daemon, "fish", work, "git ch")
    # A fresh HOME too: with no history of its own, fish imports ~/.bash_history.
    env = dict(daemon.env, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    pane = Tmux(["fish"], env, work)
    tmux_sessions.append(pane)
    wait_for(lambda: pane.prompt_line("READY> ") is not None, 15, "the fish prompt", show=pane.dump)
    pane.send("git ch", literal=True)
    wait_for(lambda: (pane.prompt_line("READY> ") or "").startswith("READY> git ch"), 5, "the typed line", show=pane.dump)
    pane.send("M-/")
    pane.send("C-x", "C-d")
    filled = read_when_written(tmp_path / "buffer", 60)
    assert filled.startswith("git ch")
    if deterministic:
        assert filled == expected
    assert wait_for(lambda: (pane.prompt_line("READY> ") or "").startswith(f"READY> {filled}".rstrip()), 5, "the filled line", show=pane.dump)
    assert not (tmp_path / "ran").exists(), "a command was executed"


@pytest.mark.model
@pytest.mark.parametrize("via", ["socat", "nc"])
def test_bash_and_fish_fallback_transports(daemon, client, tmp_path, via):
    """Without the C client, bash and fish speak JSON themselves through socat or nc."""
    expected_bash, det_bash = expected_text(client, daemon, "bash", tmp_path, "git ch")
    bash = subprocess.run(
        ["bash", "--noprofile", "--norc", "-ic", f"source {BASH_SCRIPT}; _exlsp_via={via}; HISTFILE=/dev/null; history -c; "
         "_exlsp_ask complete 'git ch'; echo \"rc=$? $_exlsp_risk $_exlsp_text\""],
        capture_output=True, text=True, env=dict(daemon.env, HOME=str(tmp_path)), cwd=tmp_path, stdin=subprocess.DEVNULL,
        timeout=60,
    ).stdout.strip().splitlines()[-1]
    rc, risk, text = bash.split(" ", 2)
    assert rc == "rc=0" and risk in ("low", "medium", "high") and text.startswith("git ch")
    if det_bash:
        assert text == expected_bash
    expected_fish, det_fish = expected_text(client, daemon, "fish", tmp_path, "git ch")
    fish = subprocess.run(
        ["fish", "--no-config", "-ic", f"source {FISH_SCRIPT}; set -g __exlsp_via {via}; __exlsp_ask complete 'git ch'; echo rc=$status"],
        capture_output=True, text=True, env=dict(daemon.env, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"),
                                                 XDG_DATA_HOME=str(tmp_path / "data")), cwd=tmp_path,
        stdin=subprocess.DEVNULL, timeout=60,
    ).stdout.splitlines()
    assert fish[-1] == "rc=0", fish
    assert fish[0] in ("low", "medium", "high") and fish[1].startswith("git ch")
    if det_fish:
        assert fish[1] == expected_fish
