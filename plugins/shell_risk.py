"""How risky a suggested shell command is, from a real parse of it; and making suggestions safe to
print in a terminal.

``classify(command) -> (risk, reason)``: the line is tokenized as a shell would (``shell_syntax``),
split into simple commands, wrappers (``sudo``, ``env``, ``xargs``, ``find -exec``, ``sh -c``,
``ssh host``) are looked through, substitutions are judged as command lines of their own, and the
riskiest finding wins. Quoted text is an argument, never a command (``git commit -m "rm -rf /"``
is low), unless it is handed to a shell.

Nothing here runs anything or looks at the file system: the same text always gets the same answer.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from .shell_syntax import ASSIGNMENT, Command, Op, Word, split_commands, tokenize

Risk = Literal["low", "medium", "high"]
LEVELS: tuple[Risk, ...] = ("low", "medium", "high")
LOW, MEDIUM, HIGH = 0, 1, 2

# level, reason, destructive (sudo turns a destructive finding high, not an install or upload)
Finding = tuple[int, str, bool]


def classify(command: str) -> tuple[Risk, str]:
    """The risk of running ``command`` and why ("" when low)."""
    level, reason = _judge_line(command, 0)
    return LEVELS[level], reason


def max_risk(a: str, b: str) -> Risk:
    """The higher of two risks; anything unknown counts as low."""
    return LEVELS[max(LEVELS.index(r) if r in LEVELS else 0 for r in (a, b))]  # type: ignore[arg-type]


# ---- sanitizing --------------------------------------------------------------------------------

_ESCAPES = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]?                          # CSI: colours, cursor moves, erase
    | \x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?       # OSC: titles, hyperlinks, clipboard
    | \x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?            # DCS, SOS, PM, APC
    | \x1b[ -/]*[0-~]?                                  # any other escape sequence
    | \x9b[0-?]*[ -/]*[@-~]?                            # 8-bit CSI
    | [\x90\x98\x9d\x9e\x9f][^\x07\x9c]*(?:\x07|\x9c)?  # 8-bit DCS, SOS, OSC, PM, APC
    """,
    re.VERBOSE,
)
_LINE_BREAK = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# C0, DEL, C1, and invisible characters that make what is shown differ from what runs (bidi
# overrides as in "Trojan Source", zero-width characters, BOM).
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def sanitize(text: str) -> str:
    """One line with no terminal escapes or control characters: escape sequences go whole (their
    parameters too), the text is cut at its first line break (what follows would be another
    command), tabs become spaces, every other control or invisible formatting character goes."""
    text = _ESCAPES.sub("", text)
    text = _LINE_BREAK.split(text, maxsplit=1)[0]
    return _INVISIBLE.sub("", text.replace("\t", " "))


# ---- what counts as precious -------------------------------------------------------------------

_SHELLS = {"sh", "bash", "zsh", "dash", "ksh", "fish", "csh", "tcsh", "ash", "busybox"}
_INTERPRETERS = _SHELLS | {"python", "python2", "python3", "perl", "ruby", "node", "php", "lua", "pwsh", "osascript"}
_FETCHERS = {"curl", "wget", "fetch", "http", "https", "aria2c"}
_DISK_TOOLS = {"dd", "shred", "wipefs", "mkswap", "fdisk", "sfdisk", "gdisk", "sgdisk", "cfdisk", "parted",
               "blkdiscard", "mke2fs", "dropdb", "killall5"}
_TOP_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/boot", "/var", "/opt", "/dev", "/sys",
             "/proc", "/root", "/home", "/Users", "/System", "/Library", "/Applications", "/private")
_SYSTEM_FILE_DIRS = tuple(d + "/" for d in ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/boot",
                                            "/sys", "/proc", "/System"))
_DEVICE = re.compile(r"/dev/(sd|hd|vd|xvd|nvme|mmcblk|disk|rdisk|loop|md|dm-|mapper/|mem|kmem|port)")
_HARMLESS_TARGET = re.compile(r"/dev/(null|stdout|stderr|tty|fd/\d+|pts/\d+)$")
_OUTPUT_REDIRECTS = {">", ">>", ">|", "&>", "&>>", ">&"}


def _critical(target: str) -> str | None:
    """A name for ``target`` when it is /, a home or a top-level system directory (or all of its
    contents: ``/*``, ``~/``), else None."""
    t = re.sub(r"(/\*|/\.)+$", "/", target).rstrip("/") or "/"
    if t == "/":
        return "/"
    if t in ("~", "$HOME", "${HOME}") or re.fullmatch(r"~[a-z_][\w-]*", t):
        return "a home directory"
    return t if t in _TOP_DIRS else None


def _system_file(target: str) -> bool:
    return target.startswith(_SYSTEM_FILE_DIRS)


def _flags(args: list[str]) -> set[str]:
    """Options as written (``--force``) plus each letter of short clusters (``-rf`` -> r, f)."""
    out: set[str] = set()
    for a in args:
        if a == "--":
            break
        if a.startswith("--"):
            out.add(a.split("=", 1)[0])
        elif a.startswith("-") and len(a) > 1:
            out.update(a[1:])
    return out


def _operands(args: list[str]) -> list[str]:
    out, options = [], True
    for a in args:
        if options and a == "--":
            options = False
        elif not (options and a.startswith("-") and len(a) > 1):
            out.append(a)
    return out


def _after_options(args: list[str], takes_value: set[str]) -> list[str]:
    """What follows a wrapper's own options: the wrapped command."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        if args[i] == "--":
            return args[i + 1 :]
        i += 2 if args[i] in takes_value else 1
    return args[i:]


# ---- judging -----------------------------------------------------------------------------------


def _judge_line(line: str, depth: int) -> tuple[int, str]:
    if depth > 8:
        return MEDIUM, "nested too deeply to judge"
    tokens = tokenize(line)
    findings: list[Finding] = []
    if _is_fork_bomb(tokens):
        findings.append((HIGH, "a fork bomb: it multiplies processes until the machine stalls", True))
    for cmd in split_commands(tokens):
        findings.extend(_judge_command(cmd, depth))
    level = max((f[0] for f in findings), default=LOW)
    return level, next((f[1] for f in findings if f[0] == level), "") if level else ""


def _from_line(code: str, depth: int) -> list[Finding]:
    level, reason = _judge_line(code, depth + 1)
    return [(level, reason, True)] if level else []


def _is_fork_bomb(tokens: list[Word | Op]) -> bool:
    # name() { ... name | name & ... }: a function that calls itself into a pipe or background.
    for i in range(len(tokens) - 2):
        name, a, b = tokens[i : i + 3]
        if isinstance(name, Word) and isinstance(a, Op) and a.text == "(" and isinstance(b, Op) and b.text == ")":
            body = tokens[i + 3 :]
            end = next((j for j, t in enumerate(body) if isinstance(t, Word) and t.text.endswith("}")), len(body))
            body = body[: end + 1]
            calls = sum(1 for t in body if isinstance(t, Word) and t.text.strip("{}") == name.text)
            if calls >= 2 and any(isinstance(t, Op) and t.text in ("|", "&", "|&") for t in body):
                return True
    return False


def _judge_command(cmd: Command, depth: int) -> list[Finding]:
    findings = [f for op, target in cmd.redirects for f in _judge_redirect(op, target)]
    word_subs = [sub for w in cmd.words for sub in w.subs]
    for sub in cmd.subs + word_subs:
        findings.extend(_from_line(sub, depth))
    fetched = any(_fetches(sub) for sub in word_subs)
    findings.extend(_judge_argv(cmd.args, cmd.piped_in, fetched, depth))
    return findings


def _fetches(source: str) -> bool:
    return any(c.args and os.path.basename(c.args[0]) in _FETCHERS for c in split_commands(tokenize(source)))


def _judge_redirect(op: str, target: str) -> list[Finding]:
    if op not in _OUTPUT_REDIRECTS or op == ">&" and (target.isdigit() or target == "-"):
        return []  # input, here-docs, here-strings, fd duplication
    if _DEVICE.match(target):
        return [(HIGH, f"writes straight to the device {target}", True)]
    if _HARMLESS_TARGET.match(target):
        return []
    if op.endswith(">>"):
        return [(MEDIUM, f"appends to the system file {target}", True)] if _system_file(target) else []
    if _system_file(target) or _critical(target):
        return [(HIGH, f"overwrites the system file {target}", True)]
    return [(MEDIUM, f"overwrites {target} (> replaces its content)", True)]


def _judge_argv(args: list[str], piped_in: bool, fetched: bool, depth: int) -> list[Finding]:
    """Look through wrappers to the command that runs, then judge it."""
    if not args or not args[0]:
        return []
    name, rest = os.path.basename(args[0].lstrip("\\")), args[1:]
    if name in ("sudo", "doas", "run0", "pkexec"):
        inner = _after_options(rest, {"-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-U", "-T", "--user",
                                      "--group", "--host", "--prompt", "--chdir", "--role", "--type"})
        return _as_root(_judge_argv(inner, piped_in, fetched, depth), shell=not inner)
    if name == "su":
        code = rest[rest.index("-c") + 1] if "-c" in rest[:-1] else ""
        return _as_root(_from_line(code, depth) if code else [], shell=not code)
    if name in ("env", "nice", "nohup", "time", "timeout", "stdbuf", "ionice", "command", "builtin", "exec",
                "watch", "torsocks", "proxychains", "proxychains4", "unbuffer", "caffeinate", "chronic"):
        inner = _after_options(rest, {"-n", "-u", "-C", "-S", "-c", "-s", "-k", "-a", "--signal", "--kill-after"})
        while inner and (ASSIGNMENT.match(inner[0]) or name == "timeout" and re.fullmatch(r"[\d.]+[smhd]?", inner[0])):
            inner = inner[1:]
        return _judge_argv(inner, piped_in, fetched, depth)
    if name == "xargs":
        inner = _after_options(rest, {"-I", "-n", "-P", "-d", "-E", "-L", "-s", "-a", "--max-args", "--max-procs",
                                      "--delimiter", "--arg-file"})
        return _judge_argv(inner, False, False, depth)
    if name in ("eval", "source", ".") or name in _SHELLS and "-c" in rest[:-1]:
        code = " ".join(rest) if name == "eval" else rest[rest.index("-c") + 1] if "-c" in rest[:-1] else ""
        found = _from_line(code, depth) if code else []
        if fetched:
            found.append((HIGH, f"{name} runs a script downloaded from the network", True))
        return found
    if name == "ssh":
        remote = _after_options(rest, {"-p", "-i", "-l", "-o", "-F", "-J", "-L", "-R", "-D", "-W", "-b", "-c",
                                       "-E", "-e", "-m", "-O", "-Q", "-S", "-w", "-B"})
        found = _from_line(" ".join(remote[1:]), depth) if len(remote) > 1 else []
        return [(level, f"on {remote[0]}: {why}", d) for level, why, d in found]
    if name == "find":
        return _judge_find(rest, depth)
    if name in _INTERPRETERS:
        if fetched:
            return [(HIGH, f"{name} runs a script downloaded from the network", True)]
        if piped_in and _reads_code_from_stdin(name, rest):
            return [(HIGH, f"pipes text into {name}, which runs it as code", True)]
        if name.startswith("python") and rest[:2] == ["-m", "pip"]:
            return _judge_packages("pip", _operands(rest[2:]), rest[2:])
        return []
    return _judge_tool(name, rest)


def _as_root(inner: list[Finding], shell: bool) -> list[Finding]:
    out: list[Finding] = []
    for level, reason, destructive in inner:
        if destructive and level >= MEDIUM:
            out.append((HIGH, f"as root: {reason}", True))
        elif level:
            out.append((level, f"{reason} (as root)", destructive))
    return out + [(MEDIUM, "opens a root shell" if shell else "runs as root", False)]


def _reads_code_from_stdin(name: str, args: list[str]) -> bool:
    for a in args:
        if a == "-" or name in _SHELLS and a == "-s":
            return True
        if not a.startswith("-"):
            return False  # a script file: stdin is its data
        if a.startswith("--") or set(a[1:]) & set("cmeEnpr"):
            return False  # inline code (-c, -e), a module (-m), a line loop (-n, -p): stdin is data
    return True


def _judge_find(args: list[str], depth: int) -> list[Finding]:
    out: list[Finding] = []
    first_expr = next((i for i, a in enumerate(args) if a.startswith(("-", "(", "!"))), len(args))
    if "-delete" in args:
        where = next((c for c in map(_critical, args[:first_expr]) if c), None)
        out.append((HIGH, f"deletes everything find matches{' under ' + where if where else ''}", True))
    for i, a in enumerate(args):
        if a in ("-exec", "-execdir", "-ok", "-okdir"):
            end = next((j for j in range(i + 1, len(args)) if args[j] in (";", "+")), len(args))
            out.extend(_judge_argv(args[i + 1 : end], False, False, depth))
    return out


def _judge_tool(name: str, args: list[str]) -> list[Finding]:
    flags, operands = _flags(args), _operands(args)
    critical = next((c for c in map(_critical, operands) if c), None)
    recursive = bool(flags & {"r", "R", "--recursive"})
    if name == "rm":
        if "--no-preserve-root" in flags or critical:
            return [(HIGH, f"deletes {critical or '/'}{' recursively' if recursive else ''}", True)]
        if recursive:
            return [(HIGH, "deletes files recursively" + (f": {' '.join(operands)}" if operands else ""), True)]
        if any(map(_system_file, operands)):
            return [(HIGH, "deletes a system file", True)]
        return [(MEDIUM, "deletes files", True)]
    if name in _DISK_TOOLS or name.startswith("mkfs"):
        return [(HIGH, f"{name} can destroy a disk's or a database's data", True)]
    if name == "badblocks" and "w" in flags or name == "cryptsetup" and {"luksFormat", "erase"} & set(operands):
        return [(HIGH, f"{name} overwrites a disk", True)]
    if name in ("chmod", "chown", "chgrp"):
        if recursive and critical:
            return [(HIGH, f"{name} -R on {critical}", True)]
        return [(MEDIUM, f"{name} changes many files", True)] if recursive or critical else []
    if name in ("mv", "cp", "rsync", "install", "ln"):
        return _judge_copy(name, args, flags, operands)
    if name in ("truncate", "tee"):
        operands = [o for o in operands if not _HARMLESS_TARGET.match(o)]
        if any(_system_file(o) or _DEVICE.match(o) for o in operands):
            verb = "appends to" if flags & {"a", "--append"} else "overwrites"
            return [(MEDIUM if verb == "appends to" else HIGH, f"{name} {verb} a system file", True)]
        if not operands or flags & {"a", "--append"}:
            return []
        return [(MEDIUM, f"{name} overwrites {' '.join(operands)}", True)]
    if name == "kill":
        pids = args[2:] if args[:1] in (["-s"], ["-n"]) else args[1:] if args[:1] and args[0].startswith("-") else args
        if "-1" in (pids[1:] if pids[:1] == ["--"] else pids):
            return [(HIGH, "kill -1 signals every process you own", True)]
        return [(MEDIUM, "kills processes", True)]
    if name in ("pkill", "killall", "skill", "xkill"):
        return [(MEDIUM, "kills processes", True)]
    if name in ("shutdown", "reboot", "poweroff", "halt") or name == "init" and operands[:1] in (["0"], ["6"]):
        return [(MEDIUM, "shuts down or restarts the machine", False)]
    if name == "systemctl" and set(operands) & {"reboot", "poweroff", "halt", "kexec"}:
        return [(MEDIUM, "shuts down or restarts the machine", False)]
    if name == "crontab" and "r" in flags:
        return [(HIGH, "crontab -r deletes all your cron jobs", True)]
    if name == "git":
        return _judge_git(args)
    if name in ("curl", "wget", "scp", "sftp", "ftp", "lftp", "nc", "ncat", "netcat", "socat", "http", "https"):
        return _judge_network(name, args, flags)
    if name in ("docker", "podman", "kubectl", "terraform", "helm"):
        if name == "terraform" and "destroy" in operands:
            return [(HIGH, "terraform destroy deletes infrastructure", True)]
        if set(operands[:2]) & {"rm", "rmi", "prune", "delete", "uninstall"}:
            return [(MEDIUM, f"{name} deletes resources", True)]
        return []
    return _judge_packages(name, operands, args)


def _judge_copy(name: str, args: list[str], flags: set[str], operands: list[str]) -> list[Finding]:
    if name == "rsync" and any(f.startswith("--delete") for f in flags):
        return [(HIGH, "rsync --delete removes files at the destination", True)]
    if name == "mv":
        moved = next((c for c in map(_critical, operands[:-1]) if c), None)
        if moved or operands[-1:] == ["/dev/null"]:
            return [(HIGH, f"moves {moved or 'files into /dev/null'} away", True)]
    if name == "ln" and not flags & {"f", "--force"}:
        return []
    if flags & {"n", "i", "--no-clobber", "--interactive"} or any(a.startswith("--update=none") for a in args):
        return []
    return [(MEDIUM, f"{name} may overwrite existing files", True)]


def _judge_git(args: list[str]) -> list[Finding]:
    rest = _after_options(args, {"-C", "-c", "--git-dir", "--work-tree", "--namespace"})
    if not rest:
        return []
    sub, sub_args = rest[0], rest[1:]
    flags, operands = _flags(sub_args), _operands(sub_args)
    if sub == "push":
        if flags & {"f", "--force", "--mirror"} or any(o.startswith("+") for o in operands):
            return [(HIGH, "git push --force rewrites the remote's history", True)]
        if flags & {"--force-with-lease", "--force-if-includes", "d", "--delete", "--prune"} or any(
            o.startswith(":") for o in operands
        ):
            return [(MEDIUM, "git push may rewrite or delete remote branches", True)]
    elif sub == "reset" and "--hard" in flags:
        return [(HIGH, "git reset --hard discards uncommitted changes", True)]
    elif sub == "clean" and flags & {"f", "--force"} and not flags & {"n", "--dry-run"}:
        return [(HIGH, "git clean deletes untracked files", True)]
    elif sub == "restore" and (not flags & {"S", "--staged"} or flags & {"W", "--worktree"}) or (
        sub == "checkout" and ("." in operands or "--" in sub_args or flags & {"f", "--force"})
    ):
        return [(MEDIUM, f"git {sub} discards local changes", True)]
    elif sub == "stash" and operands[:1] in (["drop"], ["clear"]):
        return [(MEDIUM, "git stash drops stashed changes", True)]
    elif sub == "branch" and ("D" in flags or flags & {"d", "--delete"} and flags & {"f", "--force"}):
        return [(MEDIUM, "git branch -D deletes a branch even if unmerged", True)]
    elif sub in ("filter-branch", "filter-repo") or sub == "reflog" and operands[:1] == ["expire"]:
        return [(MEDIUM, f"git {sub} rewrites history", True)]
    return []


_CURL_SENDS = {"d", "F", "T", "--data", "--data-binary", "--data-raw", "--data-urlencode", "--data-ascii",
               "--form", "--form-string", "--json", "--upload-file"}
_WGET_SENDS = {"--post-data", "--post-file", "--body-data", "--body-file"}


def _judge_network(name: str, args: list[str], flags: set[str]) -> list[Finding]:
    if name in ("scp", "sftp", "ftp", "lftp"):
        return [(MEDIUM, f"{name} copies files over the network", True)]
    if name in ("nc", "ncat", "netcat", "socat"):
        return [] if "z" in flags else [(MEDIUM, f"{name} can send data over the network", False)]
    if name in ("http", "https"):
        sends = args[:1] and args[0].upper() in ("POST", "PUT", "PATCH", "DELETE")
        return [(MEDIUM, f"{name} uploads data", False)] if sends else []
    method = ""
    for i, a in enumerate(args):
        if a in ("-X", "--request", "--method") and i + 1 < len(args):
            method = args[i + 1]
        elif a.startswith(("--request=", "--method=")):
            method = a.split("=", 1)[1]
        elif a.startswith("-X") and len(a) > 2:
            method = a[2:]
    sends = flags & (_CURL_SENDS if name == "curl" else _WGET_SENDS)
    if sends or method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
        return [(MEDIUM, f"{name} uploads data", False)]
    return []


_PACKAGE_TOOLS = {"apt", "apt-get", "aptitude", "dnf", "yum", "zypper", "apk", "brew", "snap", "flatpak", "port",
                  "pkg", "pip", "pip3", "pipx", "uv", "poetry", "npm", "pnpm", "yarn", "bun", "gem", "cargo", "go",
                  "conda", "mamba", "composer"}
_PACKAGE_VERBS = {"install", "reinstall", "add", "remove", "rm", "purge", "erase", "uninstall", "un", "autoremove",
                  "upgrade", "dist-upgrade", "full-upgrade", "downgrade", "localinstall", "ci", "i", "require"}


def _judge_packages(name: str, operands: list[str], args: list[str]) -> list[Finding]:
    if name in ("pacman", "yay", "paru"):
        # -S installs, -R removes, -U installs a file; -Ss/-Si/-Sg/-Sp/-Sl only look.
        changes = any(re.fullmatch(r"-S[a-zA-Z]*", a) and not set(a[2:]) & set("sigpl") or a[:2] in ("-R", "-U")
                      for a in args)
        return [(MEDIUM, f"{name} installs or removes packages", False)] if changes else []
    if name not in _PACKAGE_TOOLS:
        return []
    verbs = set(operands[:3] if name == "uv" else operands[:1])
    if name in ("dnf", "yum", "zypper", "apk") and "update" in verbs or name == "go" and "get" in verbs:
        verbs.add("upgrade")
    if name == "uv" and "sync" in verbs:
        verbs.add("install")
    if verbs & _PACKAGE_VERBS:
        return [(MEDIUM, f"{name} installs or removes packages", False)]
    return []
