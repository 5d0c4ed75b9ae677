"""``exlsp/status``: the same content as ``exlsp status`` (model, lanes, cache hit rate, tokens/s,
uptime, model_loads), plus what the language server itself counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..server import ExlspServer

METHOD = "exlsp/status"


def _encoding(ls: ExlspServer) -> str | None:
    if ls.protocol._workspace is None:  # not initialized yet
        return None
    enc = ls.workspace.position_encoding  # pygls keeps either the enum or the plain string
    return getattr(enc, "value", enc)


async def handle(ls: ExlspServer, params: Any = None) -> dict[str, Any]:
    state = ls.exlsp
    status: dict[str, Any] = {"ready": state.assistant is not None, "loadError": state.load_error}
    if state.assistant is not None:
        status.update(state.assistant.status())
    status["lsp"] = {
        **state.counters,
        "attached": state.inflight.attached,
        "superseded": state.inflight.superseded,
        "positionEncoding": _encoding(ls),
    }
    return status
