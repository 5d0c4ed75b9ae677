"""Built-in plugin: shell context (shell kind, OS, cwd, git branch, last exit status, recent
history with secrets redacted) for command suggestions.

The client sends what it knows (cwd, history, exit status); the git branch is read from
``.git/HEAD`` without running git — exlsp never executes anything.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from exlsp.plugins import hookimpl
from exlsp.plugins.api import ContextChunk, ModelInfo, Query, ShellQuery
from exlsp.plugins.redact import redact


def git_branch(cwd: str, max_depth: int = 32) -> str | None:
    """The branch named in the nearest ``.git/HEAD`` above ``cwd`` (or a short commit id)."""
    if not cwd:
        return None
    try:
        path = Path(cwd).resolve()
    except OSError:
        return None
    for folder in [path, *path.parents][:max_depth]:
        git = folder / ".git"
        try:
            if git.is_file():  # a worktree or submodule: "gitdir: <path>"
                target = git.read_text(errors="replace").strip().removeprefix("gitdir:").strip()
                git = (folder / target).resolve()
            head = (git / "HEAD").read_text(errors="replace").strip()
        except OSError:
            continue
        if head.startswith("ref:"):
            return head.split("/", 2)[-1] if head.count("/") >= 2 else head[4:].strip()
        return head[:12] or None
    return None


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
        chunks = [ContextChunk(source=self.name, text="\n".join(facts))]
        if self.send_history and query.history and self.history_lines > 0:
            recent = [redact(line) for line in query.history[-self.history_lines :] if line.strip()]
            if recent:
                chunks.append(ContextChunk(source=self.name, text="recent commands:\n" + "\n".join(recent)))
        return chunks


@hookimpl
def exlsp_register_context_providers(register):
    register(ShellContext())


@hookimpl
def exlsp_default_settings():
    return {"history_lines": 12, "send_history": True}
