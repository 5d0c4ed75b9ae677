"""``exlsp/chatSessions``, ``exlsp/chatSession``, ``exlsp/chatSessionDelete``: read and delete the
chat sessions ``exlsp/chat`` records when it carries a ``sessionId`` (docs/chat-sessions.md).

Params and results (times are Unix seconds)::

    exlsp/chatSessions      {"limit": 50}         -> {"sessions": [{"id", "title", "created", "updated", "messageCount"}]}
    exlsp/chatSession       {"sessionId": "...", "limit": null}
                                                  -> {"session": {...}, "messages": [{"role", "content", "created", "complete"}]}
                                                     or null when there is no such session
    exlsp/chatSessionDelete {"sessionId": "..."}  -> {"deleted": true | false}

Malformed params are answered with InvalidParams, like ``exlsp/chat``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from pygls.exceptions import JsonRpcInvalidParams

from exlsp.plugins.chat_sessions import ChatSessions
from exlsp.plugins.chat_store import MAX_LIST, SessionError, SessionInfo, check_session_id

from .params import raw_params

if TYPE_CHECKING:
    from ..server import ExlspServer

LIST = "exlsp/chatSessions"
GET = "exlsp/chatSession"
DELETE = "exlsp/chatSessionDelete"


class ListParams(msgspec.Struct):
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST)] = 50


class GetParams(msgspec.Struct, rename="camel"):
    session_id: str
    limit: Annotated[int, msgspec.Meta(ge=1)] | None = None


class DeleteParams(msgspec.Struct, rename="camel"):
    session_id: str


def _parse(method: str, params: Any, kind: type[Any]) -> Any:
    raw = raw_params(params)
    try:
        parsed = msgspec.convert({} if raw is None else raw, kind)
        if hasattr(parsed, "session_id"):
            check_session_id(parsed.session_id)
    except (msgspec.ValidationError, SessionError) as exc:
        raise JsonRpcInvalidParams(f"{method}: {exc}") from None
    return parsed


def sessions_of(ls: ExlspServer, method: str) -> ChatSessions:
    sessions = ls.exlsp.sessions
    if sessions is None:
        raise JsonRpcInvalidParams(f"{method}: this exlsp process keeps no chat sessions")
    return sessions


def session_json(info: SessionInfo) -> dict[str, Any]:
    return {"id": info.id, "title": info.title, "created": info.created, "updated": info.updated,
            "messageCount": info.messages}


async def handle_list(ls: ExlspServer, params: Any = None) -> dict[str, Any]:
    p = _parse(LIST, params, ListParams)
    return {"sessions": [session_json(s) for s in await sessions_of(ls, LIST).list(p.limit)]}


async def handle_get(ls: ExlspServer, params: Any) -> dict[str, Any] | None:
    p = _parse(GET, params, GetParams)
    found = await sessions_of(ls, GET).get(p.session_id, p.limit)
    if found is None:
        return None
    info, messages = found
    return {
        "session": session_json(info),
        "messages": [{"role": m.role, "content": m.content, "created": m.created, "complete": m.complete}
                     for m in messages],
    }


async def handle_delete(ls: ExlspServer, params: Any) -> dict[str, Any]:
    p = _parse(DELETE, params, DeleteParams)
    return {"deleted": await sessions_of(ls, DELETE).delete(p.session_id)}
