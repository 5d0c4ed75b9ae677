"""`exlsp shell-init zsh|bash|fish|systemd`: the line that loads exlsp into a shell, and the tiny
C client that bash and fish use.

    exlsp shell-init zsh >> ~/.zshrc        # appends `source '/…/editors/shell/exlsp.zsh'`
    exlsp shell-init bash >> ~/.bashrc      # the same, after building exlsp-client (once) into
                                            # ~/.local/share/exlsp/bin (needs cc)
    exlsp shell-init fish >> ~/.config/fish/config.fish
    exlsp shell-init systemd > ~/.config/systemd/user/exlsp.service

Printing is all it does to the shell: the scripts themselves never run a suggestion.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from exlsp.runtime.errors import ExlspError

SHELLS = ("zsh", "bash", "fish")
SCRIPTS = {"zsh": "exlsp.zsh", "bash": "exlsp.bash", "fish": "exlsp.fish"}


def shell_dir() -> Path:
    """Where the shell scripts live (``editors/shell`` beside the package's own files)."""
    import exlsp

    return Path(exlsp.__file__).resolve().parent / "editors" / "shell"


def data_dir(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "exlsp"


def client_path(environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """Where `shell-init` builds the C client (the scripts look there too)."""
    return data_dir(environ) / "bin" / "exlsp-client"


def find_compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def build_client(dest: Path, *, compiler: str | None = None) -> Path:
    """Compile editors/shell/exlsp-client.c into ``dest`` (atomically); raises ExlspError."""
    source = shell_dir() / "exlsp-client.c"
    if not source.is_file():
        raise ExlspError(f"the client's source is missing: {source}")
    cc = compiler or find_compiler()
    if cc is None:
        raise ExlspError("no C compiler (cc, gcc, clang) found: bash and fish will use socat or nc instead")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".exlsp-client.", dir=dest.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, "-O2", "-o", tmp, str(source)], capture_output=True, text=True)
        if done.returncode != 0:
            raise ExlspError(f"building exlsp-client failed:\n{done.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def exlsp_command() -> str:
    """The absolute path of the `exlsp` console script of this installation, if there is one."""
    beside = Path(sys.executable).parent / "exlsp"
    if beside.is_file():
        return str(beside)
    found = shutil.which("exlsp")
    return str(Path(found).resolve()) if found else f"{sys.executable} -m exlsp"


def systemd_unit() -> str:
    """editors/shell/exlsp.service with ExecStart pointing at this installation."""
    text = (shell_dir() / "exlsp.service").read_text()
    lines = [
        f"ExecStart={exlsp_command()} daemon --no-demo" if line.startswith("ExecStart=") else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def snippet(shell: str, *, client: Path | None) -> str:
    script = shell_dir() / SCRIPTS[shell]
    quoted = shlex.quote(str(script))
    if shell == "fish":
        lines = [f"set -gx EXLSP_CLIENT {shlex.quote(str(client))}"] if client else []
        lines.append(f"source {quoted}")
    else:
        lines = [f"export EXLSP_CLIENT={shlex.quote(str(client))}"] if client and shell == "bash" else []
        lines.append(f"source {quoted}")
    return "\n".join(lines) + "\n"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "shell-init",
        help="print the line that loads exlsp into zsh, bash or fish (or the systemd user unit)",
        description="Print the lines to add to the shell's startup file, once: "
        "exlsp shell-init zsh >> ~/.zshrc (bash: ~/.bashrc; fish: ~/.config/fish/config.fish). "
        "For bash and fish the tiny C client is built once into ~/.local/share/exlsp/bin "
        "(a C compiler is needed; otherwise the scripts use socat or nc). "
        "`exlsp shell-init systemd` prints a systemd user unit for `exlsp daemon`.",
    )
    p.add_argument("shell", choices=(*SHELLS, "systemd"))
    p.add_argument("--path", action="store_true", help="print only the script's path")
    p.add_argument("--build", action="store_true", help="(re)build the C client even if it exists")
    p.add_argument("--no-build", action="store_true", help="never build the C client")
    return p


def run(args: argparse.Namespace) -> int:
    if args.shell == "systemd":
        sys.stdout.write(systemd_unit())
        return 0
    script = shell_dir() / SCRIPTS[args.shell]
    if not script.is_file():
        raise ExlspError(f"the {args.shell} script is missing: {script}")
    if args.path:
        print(script)
        return 0
    client: Path | None = None
    if args.shell in ("bash", "fish") and not args.no_build:
        client = client_path()
        if args.build or not os.access(client, os.X_OK):
            try:
                build_client(client)
                print(f"exlsp: built {client}", file=sys.stderr)
            except ExlspError as exc:
                print(f"exlsp: {exc}", file=sys.stderr)
                client = None
    sys.stdout.write(snippet(args.shell, client=client))
    return 0
