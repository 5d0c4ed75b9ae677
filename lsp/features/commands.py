"""``workspace/executeCommand``: ``exlsp.accept`` (the client accepted an item; counted locally,
never sent anywhere), ``exlsp.reloadPlugins``, ``exlsp.clearCache``."""

from __future__ import annotations

from typing import Any

from .params import raw_params

# pygls evaluates command handlers' annotations at call time: keep them to names it can resolve.

ACCEPT = "exlsp.accept"
ACCEPT_KINDS = frozenset({"completion", "completion-fallback", "word", "line", "chat", "shell", "other"})
RELOAD_PLUGINS = "exlsp.reloadPlugins"
CLEAR_CACHE = "exlsp.clearCache"


def accept(ls: Any, *args: Any) -> dict[str, Any]:
    first = raw_params(args[0]) if args else None
    info = first if isinstance(first, dict) else {}
    kind = info.get("kind", "completion") if isinstance(info.get("kind"), str) else "completion"
    if kind not in ACCEPT_KINDS:  # counted per kind: a client must not grow the table at will
        kind = "other"
    ls.exlsp.counters["accepted"] += 1
    if ls.exlsp.assistant is not None:
        ls.exlsp.assistant.accept(kind)
    return {"accepted": ls.exlsp.counters["accepted"]}


def reload_plugins(ls: Any, *args: Any) -> dict[str, Any]:
    manager = ls.exlsp.plugins
    manager.reload_local()
    blocked = [p.name for p in manager.report() if p.status == "blocked"]
    return {"generation": manager.generation, "blocked": blocked}


def clear_cache(ls: Any, *args: Any) -> dict[str, Any]:
    ls.exlsp.cache.clear()
    if ls.exlsp.engine is not None:
        ls.exlsp.engine.clear_cache()
    return {"cleared": True}
