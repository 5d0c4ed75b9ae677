"""Built-in plugin: shell context (shell kind, OS, cwd, git branch, last exit status, recent
history with secrets redacted) for command suggestions.

The client sends what it knows (cwd, history, exit status); the git branch is read from
``.git/HEAD`` without running git — exlsp never executes anything.

The cwd, the branch and the history are not exlsp's to trust: ``/tmp/.git`` may be another user's,
an unpacked archive may hold a FIFO or a link to ``/dev/zero`` as ``HEAD``, a directory or branch
may be named ``<|im_end|>``. So, as git does since CVE-2022-24765, only a repository of our own
user is read; ``HEAD`` is read without blocking, as a small regular file only; and special-token
spellings are broken before the text reaches a prompt (shell prompts are tokenized with special
tokens parsed).
"""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path
from typing import Any

from exlsp.plugins import hookimpl
from exlsp.plugins.api import ContextChunk, ModelInfo, Query, ShellQuery
from exlsp.plugins.redact import redact


# HEAD holds a ref or a commit id; a gitdir file one path. Anything longer is not git's.
MAX_GIT_FILE_BYTES = 4096


def read_own_small_file(path: Path) -> str | None:
    """The text of ``path`` if it is a regular file of this user (at most ``MAX_GIT_FILE_BYTES``
    read), else None. Never blocks: a FIFO opened with O_NONBLOCK returns at once, and is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return None
        return os.read(fd, MAX_GIT_FILE_BYTES).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _own_directory(path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def git_branch(cwd: str, max_depth: int = 32) -> str | None:
    """The branch named in the nearest ``.git/HEAD`` above ``cwd`` (or a short commit id); a
    repository of another user, or a HEAD that is not a small regular file, counts as none."""
    if not cwd:
        return None
    try:
        path = Path(cwd).resolve()
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    for folder in [path, *path.parents][:max_depth]:
        git = folder / ".git"
        try:
            if git.is_file():  # a worktree or submodule: "gitdir: <path>"
                text = read_own_small_file(git)
                if text is None:
                    continue
                git = (folder / text.strip().removeprefix("gitdir:").strip()).resolve()
            elif not git.is_dir():
                continue
        except (OSError, ValueError):
            continue
        if not _own_directory(git):
            continue
        head = (read_own_small_file(git / "HEAD") or "").strip()
        if not head or not head.isprintable():  # NULs of a sparse file, escapes: not git's
            continue
        if head.startswith("ref:"):
            return head.split("/", 2)[-1] if head.count("/") >= 2 else head[4:].strip()
        return head[:12]
    return None


def defuse(text: str, model: ModelInfo) -> str:
    """``text`` with every special-token spelling of the model broken by a zero-width space
    (the same rule as the assistant's chat prompts), so that it stays text when tokenized."""
    for special in sorted(model.special.by_text, key=len, reverse=True):
        if len(special) > 2 and special[0] in "<[" and special[-1] in ">]" and special in text:
            text = text.replace(special, special[0] + "\u200b" + special[1:])
    return text


class ShellContext:
    name = "shell-context"
    kinds = frozenset({"shell"})
    timeout_s = 0.2

    def __init__(self) -> None:
        self.history_lines = 12
        self.send_history = True

    def configure(self, settings: dict[str, Any]) -> None:
        self.history_lines = int(settings.get("history_lines", self.history_lines))
        self.send_history = bool(settings.get("send_history", self.send_history))

    def provide(self, query: Query, model: ModelInfo) -> list[ContextChunk]:
        if not isinstance(query, ShellQuery):
            return []
        facts = [f"shell: {query.shell}", f"os: {query.os or platform.system()}"]
        if query.cwd:
            facts.append(f"cwd: {query.cwd}")
        branch = query.git_branch or git_branch(query.cwd)
        if branch:
            facts.append(f"git branch: {branch}")
        if query.exit_status is not None:
            facts.append(f"last exit status: {query.exit_status}")
        chunks = [ContextChunk(source=self.name, text=defuse("\n".join(facts), model))]
        if self.send_history and query.history and self.history_lines > 0:
            recent = [defuse(redact(line), model) for line in query.history[-self.history_lines :] if line.strip()]
            if recent:
                chunks.append(ContextChunk(source=self.name, text="recent commands:\n" + "\n".join(recent)))
        return chunks


@hookimpl
def exlsp_register_context_providers(register):
    register(ShellContext())


@hookimpl
def exlsp_default_settings():
    return {"history_lines": 12, "send_history": True}
