"""Chat sessions: what the front doors (socket, LSP) call around ``Assistant.chat`` when a chat
request names a session. The assistant stays stateless; this wrapper records the conversation in
the ``ChatStore`` and hands the model the stored history.

A turn with ``query.session`` set:

1. The stored conversation is read. The request's messages are *new turns*, unless they begin
   with the whole stored conversation (a client that re-sends its full history): then only what
   follows it is new, and nothing is stored twice.
2. The new turns are written **before** generation starts: a crash mid-answer loses nothing the
   user typed.
3. The model gets stored history + new turns (the oldest turns dropped, leading system messages
   kept, when they would not fit the context with room for the answer).
4. The answer is written when it ends. An answer cut short (cancelled, superseded, failed, the
   client gone) is written as far as it got, marked ``complete = false``; it stays in the history
   (it is what the user saw).

Turns of one session run one at a time (a second waits for the first), so the history stays a
line. A request that adds nothing (its messages are exactly the stored conversation) regenerates
the answer if the conversation ends with a user turn (e.g. after a crash), else it is refused.

Blocking: every store call runs in a worker thread (``anyio.to_thread``). Each is well under a
millisecond on its own, but a commit with ``synchronous=FULL`` waits for an fsync, and a write
may wait up to the busy timeout for another exlsp process holding the file's lock: neither may
stall the event loop that streams completions to editors. A thread hop costs ~0.1 ms, a few
times per chat turn: nothing next to generating the answer.

A store that fails at run time (disk full ...) costs the persistence, never the chat: a warning,
and the turn goes on with what the request carried.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable, Sequence, TypeVar

import anyio

from .api import Answer, ChatMessage, ChatQuery, OnDelta
from .chat_store import ChatStore, SessionError, SessionInfo, StoredMessage, check_session_id

log = logging.getLogger(__name__)
T = TypeVar("T")

INCOMPLETE = ("cancelled", "superseded", "error")
MESSAGE_OVERHEAD = 8  # template tokens around one message (role markers, newlines), a bound


def new_turns(stored: Sequence[StoredMessage], sent: Sequence[ChatMessage]) -> list[ChatMessage]:
    """What a request adds to a stored conversation (see the module's docstring)."""
    n = len(stored)
    if n and len(sent) >= n and all(s.role == m.role and s.content == m.content for s, m in zip(stored, sent)):
        return list(sent[n:])
    return list(sent)


def fit_history(messages: list[ChatMessage], model: Any, reserve: int) -> list[ChatMessage]:
    """Drop the oldest turns after the leading system messages until the rest fits
    ``model.n_ctx - reserve`` tokens; the last message is always kept. Counting stops at the
    first turn that does not fit, so a long history costs at most a context's worth of counting."""
    if model is None or not messages:
        return messages
    budget = model.n_ctx - reserve
    # Cheap exit: a token is at least one byte of UTF-8.
    if sum(len(m.content.encode()) + MESSAGE_OVERHEAD for m in messages) <= budget:
        return messages
    lead = 0
    while lead < len(messages) - 1 and messages[lead].role == "system":
        lead += 1
    used = sum(model.count_tokens(m.content) + MESSAGE_OVERHEAD for m in messages[:lead])
    kept: list[ChatMessage] = []
    for m in reversed(messages[lead:]):
        cost = model.count_tokens(m.content) + MESSAGE_OVERHEAD
        if kept and used + cost > budget:
            break
        used += cost
        kept.append(m)
    dropped = len(messages) - lead - len(kept)
    if dropped:
        log.debug("chat session: %d old turns left out to fit the context", dropped)
    return messages[:lead] + kept[::-1]


class ChatSessions:
    """One per process that owns the model; shared by all its front doors."""

    def __init__(self, store: ChatStore) -> None:
        self.store = store
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @classmethod
    def default(cls) -> ChatSessions:
        return cls(ChatStore.default())

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    # ---- read access ---------------------------------------------------------------------------

    async def list(self, limit: int = 50) -> list[SessionInfo]:
        return await self._call(self.store.sessions, limit)

    async def get(self, session_id: str, limit: int | None = None) -> tuple[SessionInfo, list[StoredMessage]] | None:
        check_session_id(session_id)
        info = await self._call(self.store.session, session_id)
        if info is None:
            return None
        return info, await self._call(self.store.messages, session_id, limit)

    async def delete(self, session_id: str) -> bool:
        check_session_id(session_id)
        async with self._turn(session_id):  # not under a turn that is still being written
            return await self._call(self.store.delete, session_id)

    def describe(self) -> dict[str, Any]:
        return self.store.describe()

    # ---- a chat turn ---------------------------------------------------------------------------

    async def chat(self, assistant: Any, query: ChatQuery, on_delta: OnDelta | None = None) -> Answer:
        """``assistant.chat(query, on_delta)``, recorded in ``query.session`` (see the module's
        docstring). Without a session: exactly ``assistant.chat``."""
        if query.session is None:
            return await assistant.chat(query, on_delta)
        sid = check_session_id(query.session)
        async with self._turn(sid):
            stored = await self._safe(self.store.messages, [], sid)
            new = new_turns(stored, query.messages)
            if not new and (not stored or stored[-1].role != "user"):
                raise SessionError(f"the request adds no message to session {sid!r}: send the new user turn")
            if new:
                await self._safe(self.store.append, None, sid, [StoredMessage(m.role, m.content) for m in new])
            history = [ChatMessage(m.role, m.content) for m in stored] + new
            query.messages = fit_history(history, getattr(assistant, "model", None), _reserve(assistant, query))
            return await self._answer(assistant, query, sid, on_delta)

    async def _answer(self, assistant: Any, query: ChatQuery, sid: str, on_delta: OnDelta | None) -> Answer:
        pieces: list[str] = []

        async def collect(text: str) -> None:
            pieces.append(text)
            if on_delta is not None:
                result = on_delta(text)
                if inspect.isawaitable(result):
                    await result

        answer: Answer | None = None
        try:
            answer = await assistant.chat(query, collect)
            return answer
        finally:
            if answer is None:  # cancelled or failed: keep what was streamed
                text, complete = "".join(pieces), False
            else:
                text = answer.text or ("".join(pieces) if answer.stop_reason in INCOMPLETE else "")
                complete = answer.stop_reason not in INCOMPLETE
            if text:
                with anyio.CancelScope(shield=True):
                    await self._safe(self.store.append, None, sid, [StoredMessage("assistant", text, complete=complete)])

    async def _safe(self, fn: Callable[..., T], fallback: T, *args: Any) -> T:
        try:
            return await self._call(fn, *args)
        except SessionError:
            raise
        except Exception as exc:  # the store failed at run time: lose persistence, not the chat
            log.warning("exlsp: chat session store failed (%s: %s); this turn is not saved", type(exc).__name__, exc)
            return fallback

    # ---- one turn per session at a time --------------------------------------------------------

    def _turn(self, sid: str) -> "_SessionTurn":
        return _SessionTurn(self._locks, sid)


class _SessionTurn:
    """An ``anyio.Lock`` per session id, dropped when nobody holds or waits for it."""

    def __init__(self, locks: dict[str, tuple[anyio.Lock, int]], sid: str) -> None:
        self._locks, self._sid = locks, sid

    async def __aenter__(self) -> None:
        lock, users = self._locks.get(self._sid) or (anyio.Lock(), 0)
        self._locks[self._sid] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._locks[self._sid][0].release()
        self._release_user()

    def _release_user(self) -> None:
        lock, users = self._locks[self._sid]
        if users <= 1:
            del self._locks[self._sid]
        else:
            self._locks[self._sid] = (lock, users - 1)


def _reserve(assistant: Any, query: ChatQuery) -> int:
    """Tokens the history must leave free: the answer, and the document the assistant adds."""
    settings = getattr(assistant, "settings", None)
    max_tokens = min(query.max_tokens, getattr(settings, "chat_max_tokens", query.max_tokens))
    n_ctx = getattr(getattr(assistant, "model", None), "n_ctx", 0)
    document = n_ctx // 2 if (query.document or query.selection) else 0
    return max_tokens + document + 64
