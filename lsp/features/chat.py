"""``exlsp/chat``: a chat answer streamed as ``$/progress`` on the client's ``workDoneToken``
(begin -> one report per delta, the delta in ``message`` -> end); the request returns the full
text. ``$/cancelRequest`` stops the generation at the next token. Chat runs on its own lane.
With ``sessionId`` the server keeps the conversation (``messages`` are then the new turns, or the
whole conversation: stored turns are not stored twice); see docs/chat-sessions.md and
``chat_sessions.py`` beside this module for reading sessions back.

Params (validated here: pygls gives custom methods no typed route, and silence is no answer)::

    {"messages": [{"role": "user", "content": "..."}],
     "textDocument": {"uri": "..."}, "selection": {"start": {...}, "end": {...}},
     "workDoneToken": "...", "maxTokens": 512, "sessionId": "my-chat"}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from exlsp.plugins.api import ChatMessage, ChatQuery
from exlsp.plugins.chat_store import SessionError, check_session_id

from ..documents import looks_binary, offset_at, scrub
from .params import raw_params

if TYPE_CHECKING:
    from ..server import ExlspServer

METHOD = "exlsp/chat"


class _Message(msgspec.Struct):
    role: Literal["system", "user", "assistant"]
    content: str


# LSP's uinteger: lsprotocol's Position refuses anything else with a ValueError, which would
# reach the client as an internal error instead of InvalidParams.
_UInteger = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class _Position(msgspec.Struct):
    line: _UInteger
    character: _UInteger


class _Range(msgspec.Struct):
    start: _Position
    end: _Position


class _Doc(msgspec.Struct):
    uri: str


class ChatParams(msgspec.Struct, rename="camel"):
    messages: list[_Message]
    text_document: _Doc | None = None
    selection: _Range | None = None
    work_done_token: str | int | None = None
    partial_result_token: str | int | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    session_id: str | None = None


def parse(params: Any) -> ChatParams:
    try:
        parsed = msgspec.convert(raw_params(params), ChatParams)
    except msgspec.ValidationError as exc:
        raise JsonRpcInvalidParams(f"exlsp/chat: {exc}") from None
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") in a key or a role (found by fuzzing)
        raise JsonRpcInvalidParams("exlsp/chat: params hold a string that is not valid Unicode") from None
    if not parsed.messages:
        raise JsonRpcInvalidParams("exlsp/chat: messages must not be empty")
    if parsed.session_id is not None:
        try:
            check_session_id(parsed.session_id)
        except SessionError as exc:
            raise JsonRpcInvalidParams(f"exlsp/chat: sessionId: {exc}") from None
    return parsed


def _query(ls: ExlspServer, p: ChatParams) -> ChatQuery:
    query = ChatQuery(
        messages=[ChatMessage(m.role, scrub(m.content)) for m in p.messages],
        max_tokens=min(p.max_tokens or ls.exlsp.settings.chat.max_tokens, ls.exlsp.settings.chat.max_tokens * 8),
        session=p.session_id,
    )
    if p.text_document and p.text_document.uri in ls.workspace.text_documents:
        doc = ls.workspace.get_text_document(p.text_document.uri)
        if not looks_binary(doc.source):
            query.document = scrub(doc.source)
            query.path = doc.path or p.text_document.uri
            query.language = doc.language_id or ""
            if p.selection is not None:
                start = offset_at(doc, types.Position(p.selection.start.line, p.selection.start.character))
                end = offset_at(doc, types.Position(p.selection.end.line, p.selection.end.character))
                query.selection = scrub(doc.source[min(start, end) : max(start, end)]) or None
    return query


async def handle(ls: ExlspServer, params: Any) -> dict[str, Any]:
    p = parse(params)
    if p.session_id is not None and ls.exlsp.sessions is None:
        raise JsonRpcInvalidParams("exlsp/chat: this exlsp process keeps no chat sessions")
    token = p.work_done_token
    progress = ls.work_done_progress
    if token is not None:
        # A chat sent while the model loads waits for it; the client sees why in the title.
        loading = not ls.exlsp.ready.is_set()
        title = "exlsp chat (waiting for the model to load)" if loading else "exlsp chat"
        progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=True))
    assistant = await ls.exlsp.wait_ready(timeout=None)
    if assistant is None:
        if token is not None:
            progress.end(token, types.WorkDoneProgressEnd(message="failed"))
        raise JsonRpcInvalidParams(f"exlsp/chat: the model is not loaded ({ls.exlsp.load_error})")

    def on_delta(text: str) -> None:
        if token is not None:
            progress.report(token, types.WorkDoneProgressReport(message=text))
        if p.partial_result_token is not None:
            ls.protocol.notify("$/progress", {"token": p.partial_result_token, "value": {"delta": text}})

    answer = None
    try:
        if p.session_id is None:
            answer = await assistant.chat(_query(ls, p), on_delta)
        else:
            assert ls.exlsp.sessions is not None
            answer = await ls.exlsp.sessions.chat(assistant, _query(ls, p), on_delta)
    except SessionError as exc:
        raise JsonRpcInvalidParams(f"exlsp/chat: {exc}") from None
    finally:
        if token is not None:
            progress.end(token, types.WorkDoneProgressEnd(message="cancelled" if answer is None else "done"))
    stats = answer.stats
    return {
        **({"sessionId": p.session_id} if p.session_id is not None else {}),
        "text": answer.text,
        "stopReason": answer.stop_reason,
        "promptTokens": getattr(stats, "prompt_tokens", 0),
        "reusedTokens": getattr(stats, "reused_tokens", 0),
        "generatedTokens": getattr(stats, "generated_tokens", 0),
    }
