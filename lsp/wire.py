"""Every message of the Unix socket protocol, as msgspec Structs. Framing lives here too.

One UTF-8 JSON object per line. Requests and replies are two tagged unions on ``"type"``; one
``Decoder`` per union, one ``Encoder``, all created once. Schema evolution: new fields get
defaults; existing fields are never renamed or retyped. ``docs/protocol.md`` and
``docs/protocol.schema.json`` are generated from this module (``python -m exlsp.lsp.protocol_doc``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from exlsp.plugins import api

PROTOCOL = 1

Id = Annotated[
    Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | Annotated[str, Meta(max_length=256)],
    Meta(description="Chosen by the client; unique among the connection's requests in flight."),
]
ReplyId = Annotated[
    Id | None,
    Meta(description="The `id` of the request answered; null when the line could not be parsed."),
]
Risk = Literal["low", "medium", "high"]


class _Request(Struct, tag_field="type", omit_defaults=True):
    id: Id


class _Reply(Struct, tag_field="type", omit_defaults=True):
    # No default: an error's null id must still be written out.
    id: ReplyId


# ---- requests ----------------------------------------------------------------------------------


class HelloRequest(_Request, tag="hello"):
    """Optional handshake. Answered by `done` with the server's name, version and protocol."""

    protocol: int = PROTOCOL
    client: Annotated[str, Meta(max_length=256, description="e.g. `zsh`, `exlsp-cli`")] = ""


class SuggestRequest(_Request, tag="suggest"):
    """Suggest shell commands for a partial command line (or, `mode: describe`, for a description).
    Answered by `done` with `suggestions`. exlsp never executes a suggestion."""

    buffer: str
    cursor: Annotated[int, Meta(ge=0, description="cursor offset in `buffer`; null: at the end")] | None = None
    shell: str = "bash"
    cwd: str = ""
    history: Annotated[list[str], Meta(description="recent commands, newest last")] = []
    exit_status: int | None = None
    mode: Literal["complete", "describe"] = "complete"
    candidates: Annotated[int, Meta(ge=1, le=10)] = 3
    git_branch: str | None = None
    os: str = ""

    def to_query(self) -> api.ShellQuery:
        return api.ShellQuery(**_fields(self))


class CompleteRequest(_Request, tag="complete"):
    """Complete code at a cursor. Streams `delta`s, then `done` with `text` and token statistics."""

    prefix: Annotated[str, Meta(description="the document's text before the cursor")]
    suffix: Annotated[str, Meta(description="the document's text after the cursor")] = ""
    language: str = ""
    path: str = ""
    trigger: Literal["automatic", "invoked"] = "automatic"
    max_tokens: Annotated[int, Meta(ge=1, le=4096)] = 64
    candidates: Annotated[int, Meta(ge=1, le=8)] = 1
    budget_tokens: Annotated[int, Meta(ge=1, description="prompt token budget; null: the configured one")] | None = None
    time_budget_ms: Annotated[float, Meta(ge=0, description="time budget; null: the configured one")] | None = None
    open_documents: Annotated[dict[str, str], Meta(description="other documents: path -> text")] = {}

    def to_query(self) -> api.CompletionQuery:
        return api.CompletionQuery(**_fields(self))


class ChatMessage(Struct):
    """One turn of the conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


SessionId = Annotated[
    str,
    Meta(
        max_length=128,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:@+/=-]{0,127}$",
        description="a chat session, named by the client: 1-128 of letters, digits, `_.:@+/=-`",
    ),
]


class ChatRequest(_Request, tag="chat"):
    """A chat turn. Streams `delta`s, then `done` with the full `text` and token statistics.
    With `session`, the server keeps the conversation (docs/chat-sessions.md): `messages` are the
    new turns (or the whole conversation, stored turns are not stored twice)."""

    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    document: str | None = None
    path: str = ""
    language: str = ""
    selection: str | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=8192)] = 512
    session: Annotated[SessionId | None, Meta(description="record the turn in this session; null: stateless")] = None

    def to_query(self) -> api.ChatQuery:
        fields = _fields(self)
        fields["messages"] = [api.ChatMessage(m.role, m.content) for m in self.messages]
        return api.ChatQuery(**fields)


class CancelRequest(_Request, tag="cancel"):
    """Cancel the request `target` of this connection: it ends with `cancelled` (unless it had
    already ended). The cancel request itself is answered by `done`, whether or not it found one."""

    target: Annotated[Id, Meta(description="the `id` of the request to cancel")]


class StatusRequest(_Request, tag="status"):
    """Answered by `done` with `status`: what `exlsp status` shows."""


class SessionsRequest(_Request, tag="sessions"):
    """List the stored chat sessions, most recently updated first. Answered by `done` with `sessions`."""

    limit: Annotated[int, Meta(ge=1, le=1000)] = 50


class SessionRequest(_Request, tag="session"):
    """One chat session with its messages. Answered by `done` with `session` and `messages`, or
    by `error` `not_found`."""

    session: SessionId
    limit: Annotated[int, Meta(ge=1, description="only the newest `limit` messages; null: all")] | None = None


class SessionDeleteRequest(_Request, tag="session_delete"):
    """Delete a chat session and its messages. Answered by `done` with `deleted` (false: there was none)."""

    session: SessionId


Request = (
    HelloRequest | SuggestRequest | CompleteRequest | ChatRequest | CancelRequest | StatusRequest
    | SessionsRequest | SessionRequest | SessionDeleteRequest
)


# ---- replies -------------------------------------------------------------------------------------


class Suggestion(Struct):
    """All three fields are always written: shells read them without defaults."""

    text: Annotated[str, Meta(description="one line, without control characters")]
    risk: Annotated[Risk, Meta(description="from a parse of the command, never lower than the server's own check")] = "low"
    reason: Annotated[str, Meta(description="why the risk is not low")] = ""


class SessionInfo(Struct):
    """A stored chat session. Times are Unix seconds."""

    id: str
    title: Annotated[str, Meta(description="the session's first user message, one line, shortened")]
    created: float
    updated: float
    messages: Annotated[int, Meta(description="how many messages it holds")]


class StoredMessage(Struct):
    """A message of a stored chat session."""

    role: Literal["system", "user", "assistant"]
    content: str
    created: float
    complete: Annotated[bool, Meta(description="false: an answer cut short (cancelled, failed), kept as far as it got")] = True


class DeltaReply(_Reply, tag="delta"):
    """New text of a streaming request (complete, chat). Any number, before its terminal reply."""

    text: str


class DoneReply(_Reply, tag="done"):
    """A request's successful end. Which fields are present depends on the request's type."""

    # hello
    server: str | None = None
    version: str | None = None
    protocol: int | None = None
    # suggest
    suggestions: list[Suggestion] | None = None
    # complete, chat
    text: str | None = None
    items: Annotated[list[str], Meta(description="all candidates, when more than one")] | None = None
    stop_reason: str | None = None
    prompt_tokens: int | None = None
    reused_tokens: int | None = None
    generated_tokens: int | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    # status
    status: dict[str, Any] | None = None
    # sessions, session, session_delete
    sessions: list[SessionInfo] | None = None
    session: SessionInfo | None = None
    messages: list[StoredMessage] | None = None
    deleted: bool | None = None


class ErrorReply(_Reply, tag="error"):
    """A request's failed end, or the answer to a line that was not a valid request."""

    code: str
    message: str


class CancelledReply(_Reply, tag="cancelled"):
    """A request's end after a `cancel` (or after its generation was superseded)."""


Reply = DeltaReply | DoneReply | ErrorReply | CancelledReply
TERMINAL = (DoneReply, ErrorReply, CancelledReply)

REQUEST_TYPES: dict[str, type[Struct]] = {t.__struct_config__.tag: t for t in Request.__args__}  # type: ignore[attr-defined]
REPLY_TYPES: dict[str, type[Struct]] = {t.__struct_config__.tag: t for t in Reply.__args__}  # type: ignore[attr-defined]

# ---- error codes -------------------------------------------------------------------------------

PARSE_ERROR = "parse_error"
INVALID_REQUEST = "invalid_request"
UNKNOWN_TYPE = "unknown_type"
DUPLICATE_ID = "duplicate_id"
TOO_LARGE = "too_large"
TOO_MANY_REQUESTS = "too_many_requests"
INTERNAL = "internal"
NOT_FOUND = "not_found"

ERROR_CODES = {
    PARSE_ERROR: "the line is not valid UTF-8 JSON (`id` is null)",
    INVALID_REQUEST: "not an object, or a field is missing, has the wrong type or is out of range",
    UNKNOWN_TYPE: "the `type` is not one this server knows",
    DUPLICATE_ID: "the `id` belongs to a request of this connection still in flight",
    TOO_LARGE: "the line is longer than the server's limit; it was discarded up to its newline",
    TOO_MANY_REQUESTS: "the connection already has the maximum number of requests in flight",
    INTERNAL: "the request failed inside exlsp (details in the server's log)",
    NOT_FOUND: "the chat session named in a `session` request does not exist",
}


class WireError(Exception):
    """A line that is not a valid request; becomes an ``ErrorReply``."""

    def __init__(self, code: str, message: str, id: int | str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.id = code, message, id

    def reply(self) -> ErrorReply:
        return ErrorReply(id=self.id, code=self.code, message=self.message)


# ---- codecs ------------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(Request)
_reply_decoder = msgspec.json.Decoder(Reply)
_any_decoder = msgspec.json.Decoder()


def encode(message: Struct) -> bytes:
    """One framed line. JSON strings escape newlines, so the line has exactly one, at its end."""
    return _encoder.encode(message) + b"\n"


def decode_request(line: bytes) -> Request:
    """Decode one line (newline optional) or raise ``WireError`` with the reply's code and id."""
    try:
        return _request_decoder.decode(line)
    except msgspec.DecodeError as exc:
        if not isinstance(exc, msgspec.ValidationError):
            raise WireError(PARSE_ERROR, str(exc)) from None
        detail = str(exc)
    except (RecursionError, UnicodeDecodeError) as exc:  # found by fuzzing
        raise _unparseable(exc) from None
    # JSON that is not a valid request: decode loosely to answer with its id. (The typed decoder
    # may stop at a wrong type before it sees that the rest is not JSON at all.)
    try:
        raw = _any_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise WireError(PARSE_ERROR, str(exc)) from None
    except (RecursionError, UnicodeDecodeError) as exc:
        raise _unparseable(exc) from None
    if not isinstance(raw, dict):
        raise WireError(INVALID_REQUEST, detail)
    rid = _loose_id(raw.get("id"))
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise WireError(INVALID_REQUEST, "missing or non-string `type`", rid)
    if kind not in REQUEST_TYPES:
        raise WireError(UNKNOWN_TYPE, f"unknown message type {kind[:64]!r}", rid)
    raise WireError(INVALID_REQUEST, detail, rid)


def _unparseable(exc: Exception) -> WireError:
    """msgspec raises RecursionError for `[[[[...` nested thousands deep and UnicodeDecodeError
    for invalid UTF-8 inside a string (a shell's buffer in a Latin-1 locale), not DecodeError:
    uncaught, either dropped the client's connection without a reply."""
    if isinstance(exc, RecursionError):
        return WireError(PARSE_ERROR, "JSON is nested too deeply")
    return WireError(PARSE_ERROR, f"the line is not valid UTF-8 ({exc.reason})")


def _loose_id(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, str) and len(value) <= 256:
        return value
    return None


def decode_reply(line: bytes) -> Reply:
    return _reply_decoder.decode(line)


def _fields(message: Struct) -> dict[str, Any]:
    # Request fields are named like the query's fields on purpose (tests check the mapping).
    return {f: getattr(message, f) for f in message.__struct_fields__ if f != "id"}
