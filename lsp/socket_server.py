"""The Unix socket front door: newline-delimited JSON for shells, the CLI and scripts.

Each connection reads lines, answers ``hello``/``status``/``cancel`` at once and runs every
``suggest``/``complete``/``chat`` (and the chat-session requests, which touch the disk) as its
own task in the connection's task group, with a cancel
scope kept under the request's id: ``cancel``, a closed connection or a stuck reader cancel the
task, and the assistant cancels the generation with it. Every request ends with exactly one
terminal reply (``done``, ``error`` or ``cancelled``), sent after the request has left the
in-flight table, so a client may reuse an id as soon as it has read the terminal reply.

Bounds: a line is at most ``max_line_bytes`` (longer ones are answered ``too_large`` and skipped
up to their newline, never buffered); at most ``max_inflight_per_conn`` requests per connection;
replies go through a bounded queue to one writer per connection, and a connection whose writes
stay blocked for ``send_timeout_s`` is dropped with its jobs. Nothing a client sends is executed.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import sys
from pathlib import Path
from typing import Any, Callable, Protocol

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute

from exlsp import __version__
from exlsp.plugins import shell_risk
from exlsp.plugins.api import Answer, ChatQuery, CompletionQuery, OnDelta, ShellQuery
from exlsp.plugins.chat_sessions import ChatSessions
from exlsp.plugins.chat_store import SessionError

from . import wire
from .socket_paths import ClaimedSocket, SocketSetupError, claim_socket

log = logging.getLogger(__name__)


class Services(Protocol):
    """What the socket needs from the assistant. Cancelling the task that awaits ``suggest``,
    ``complete`` or ``chat`` must cancel the generation behind it."""

    async def suggest(self, query: ShellQuery) -> Answer: ...

    async def complete(self, query: CompletionQuery, on_delta: OnDelta) -> Answer: ...

    async def chat(self, query: ChatQuery, on_delta: OnDelta) -> Answer: ...

    def status(self) -> dict[str, Any]: ...


# ---- who is on the other end -------------------------------------------------------------------

_LOCAL_PEERCRED = 0x001  # macOS/BSD <sys/un.h>; Python does not export it everywhere
_XUCRED = "IIh16I"  # struct xucred: version, uid, ngroups, groups[16]


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a Unix socket (pid/gid -1 where the
    platform does not say), or None where the platform cannot tell at all."""
    if hasattr(socket, "SO_PEERCRED"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return pid, uid, gid
    if sys.platform == "darwin" or "bsd" in sys.platform:
        raw = sock.getsockopt(0, _LOCAL_PEERCRED, struct.calcsize(_XUCRED))
        return -1, struct.unpack_from("II", raw)[1], -1
    return None


def peer_allowed(sock: socket.socket) -> bool:
    """Only our own user may talk to us. Where the platform cannot tell, the 0700 directory and
    the 0600 socket are the guard."""
    try:
        creds = peer_credentials(sock)
    except OSError:
        return False
    return creds is None or creds[1] == os.getuid()


def _peer_hung_up(sock: socket.socket) -> bool:
    """After EOF: did the peer close (True) or only shut down its writing side (False)?"""
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return True  # no poll(): treat EOF as a hang-up, the safe reading


def _one_line(exc: BaseException | str, limit: int = 300) -> str:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:limit]


# ---- the listener --------------------------------------------------------------------------------

CHECK_PATH_S = 1.0  # how often a listener checks that its socket file is still at its path


async def claim(path: Path) -> ClaimedSocket:
    """``claim_socket`` from a worker thread. Shielded: a cancel during the claim must not leave a
    bound socket and a held lock behind (the caller releases what this returns)."""
    with anyio.CancelScope(shield=True):
        return await anyio.to_thread.run_sync(claim_socket, path)


async def serve_listener(
    claimed: ClaimedSocket,
    on_connection: Callable[[anyio.abc.SocketStream], Any],
    *,
    check_interval_s: float = CHECK_PATH_S,
    task_status: anyio.abc.TaskStatus[Path] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Hand every connection accepted on ``claimed`` to ``on_connection`` until cancelled, then
    release it (the socket and lock files go). ``task_status.started(path)`` once listening.

    A socket file removed under a running server (a tmp cleaner, ``rm -r`` of its directory) would
    leave it listening on a name nobody can reach. So every ``check_interval_s`` the path is
    checked; when it no longer names our socket, a new one is claimed there (directory re-created,
    0700/0600 as at start) with a warning. Open connections are not touched. If another process
    has claimed the path meanwhile, it is left alone, and claimed again once that one has gone.
    """
    path = claimed.path
    current = claimed
    try:
        await anyio.lowlevel.checkpoint()  # honour a cancel that came during the claim
        task_status.started(path)
        log.info("listening on %s", path)
        while True:
            await _listen_until_lost(current, on_connection, check_interval_s)
            current.release()
            log.warning("the socket %s was removed or replaced; creating it again", path)
            current = await _claim_again(path, check_interval_s)
    finally:
        current.release()


async def _listen_until_lost(
    claimed: ClaimedSocket, on_connection: Callable[[anyio.abc.SocketStream], Any], check_interval_s: float
) -> None:
    listener = await anyio.abc.SocketListener.from_socket(claimed.sock)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_accept_loop, listener, on_connection)
            while claimed.is_intact():
                await anyio.sleep(check_interval_s)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()


async def _claim_again(path: Path, retry_s: float) -> ClaimedSocket:
    """A new claim on ``path``, tried every ``retry_s`` until it succeeds (another process may own
    the path for a while: it is never taken from it). Each different refusal is logged once."""
    said = ""
    while True:
        try:
            claimed = await claim(path)
        except SocketSetupError as exc:  # SocketInUse included
            if str(exc) != said:
                said = str(exc)
                log.warning("cannot listen on %s again: %s; open connections are still served, "
                            "trying again every %g s", path, exc, retry_s)
            await anyio.sleep(retry_s)
            continue
        log.warning("listening on %s again", path)
        return claimed


async def _accept_loop(listener: anyio.abc.SocketListener, on_connection: Callable[[anyio.abc.SocketStream], Any]) -> None:
    while True:
        try:
            stream = await listener.accept()
        except anyio.BrokenResourceError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.warning("cannot accept a connection now (%s); retrying", cause.strerror)
                await anyio.sleep(0.1)
                continue
            raise
        on_connection(stream)


# ---- the server ----------------------------------------------------------------------------------


class SocketServer:
    def __init__(
        self,
        path: Path,
        services: Services,
        *,
        max_line_bytes: int = 1_000_000,
        max_inflight_per_conn: int = 32,
        send_timeout_s: float = 5.0,
        send_queue: int = 64,
        sessions: ChatSessions | None = None,
        claimed: ClaimedSocket | None = None,
        check_interval_s: float = CHECK_PATH_S,
    ) -> None:
        self.path = Path(path)
        self.services = services
        self._claimed = claimed  # claimed by the caller already (`exlsp daemon`, before its load)
        self.check_interval_s = check_interval_s
        self.sessions = sessions  # None: chat requests naming a session are refused
        self.max_line_bytes = max_line_bytes
        self.max_inflight_per_conn = max_inflight_per_conn
        self.send_timeout_s = send_timeout_s
        self.send_queue = send_queue
        self._connections: set[_Connection] = set()
        self.refused = 0  # connections refused by the peer-uid check

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def requests_in_flight(self) -> int:
        return sum(len(c.inflight) for c in self._connections)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[Path] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``task_status.started(path)`` once connections are accepted.
        Raises ``SocketInUse`` / ``SocketSetupError`` before that. A removed socket is created
        again (``serve_listener``). On exit every connection is closed (its jobs cancelled) and
        the socket file removed."""
        claimed, self._claimed = self._claimed, None
        if claimed is None:
            claimed = await claim(self.path)
        try:
            async with anyio.create_task_group() as tg:
                await serve_listener(
                    claimed,
                    lambda stream: tg.start_soon(self._handle, stream),
                    check_interval_s=self.check_interval_s,
                    task_status=task_status,
                )
        finally:
            claimed.release()  # already done, unless a cancel came before serve_listener began

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            sock = stream.extra(SocketAttribute.raw_socket)
            if not peer_allowed(sock):
                self.refused += 1
                log.warning("refused a connection from another user on %s", self.path)
                return
            conn = _Connection(self, stream, sock)
            self._connections.add(conn)
            try:
                await conn.run()
            except Exception:  # a bug in one connection must not take the server down
                log.exception("socket connection failed")
            finally:
                self._connections.discard(conn)

    def status(self) -> dict[str, Any]:
        status = dict(self.services.status())
        status.setdefault(
            "socket",
            {"path": str(self.path), "connections": self.connections, "requests_in_flight": self.requests_in_flight},
        )
        if self.sessions is not None:
            status.setdefault("chat_sessions", self.sessions.describe())
        return status


# ---- one connection ------------------------------------------------------------------------------


class _Connection:
    def __init__(self, server: SocketServer, stream: anyio.abc.SocketStream, sock: socket.socket) -> None:
        self.server = server
        self.stream = stream
        self.sock = sock
        self.inflight: dict[int | str, anyio.CancelScope] = {}
        self._active = 0  # request tasks that have not yet queued their terminal reply
        self._out, self._queued = anyio.create_memory_object_stream[bytes](server.send_queue)
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self) -> None:
        with self._out:
            await self._serve()

    async def _serve(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._write_loop)
            hung_up = await self._read_loop()
            # A peer that only shut down its writing side (`socat`, `nc -N`) still waits for its
            # answers: finish them, flush, then close. A peer that closed gets its jobs cancelled.
            while not hung_up and self._active:
                # Short: a half-closing client (socat, nc) waits for this loop after its answer.
                await anyio.sleep(0.005)
                hung_up = _peer_hung_up(self.sock)
            if hung_up:
                tg.cancel_scope.cancel()
            else:
                self._out.close()  # the writer flushes what is queued, then ends

    # -- reading

    async def _read_loop(self) -> bool:
        """Read and dispatch lines until EOF; True when the peer is gone for good."""
        limit = self.server.max_line_bytes
        buf = bytearray()
        discarding = False
        while True:
            try:
                chunk = await self._receive()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return True
            if not chunk:
                hung_up = _peer_hung_up(self.sock)
                if not hung_up and not discarding and bytes(buf).strip():
                    # `printf '{...}' | nc -N -U SOCK`: a last line without its newline, from a peer
                    # still reading, is a request too.
                    await self._handle_line(bytes(buf))
                return hung_up
            start = 0
            while start <= len(chunk):
                nl = chunk.find(b"\n", start)
                piece = chunk[start:] if nl < 0 else chunk[start:nl]
                if not discarding:
                    if len(buf) + len(piece) > limit:
                        await self._too_large()
                        buf.clear()
                        discarding = nl < 0
                    else:
                        buf += piece
                        if nl >= 0:
                            line = bytes(buf)
                            buf.clear()
                            if line.strip():
                                await self._handle_line(line)
                elif nl >= 0:
                    discarding = False
                if nl < 0:
                    break
                start = nl + 1

    async def _receive(self) -> bytes:
        # Not stream.receive(): on asyncio, anyio's raw-socket receive can log InvalidStateError
        # when it is cancelled just as data arrives (anyio#1267); wait_readable is immune.
        while True:
            try:
                return self.sock.recv(65536)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)

    async def _too_large(self) -> None:
        limit = self.server.max_line_bytes
        await self._reply(wire.ErrorReply(id=None, code=wire.TOO_LARGE, message=f"line longer than {limit} bytes"))

    async def _handle_line(self, line: bytes) -> None:
        try:
            request = wire.decode_request(line)
        except wire.WireError as exc:
            await self._reply(exc.reply())
            return
        rid = request.id
        if rid in self.inflight:
            await self._error(rid, wire.DUPLICATE_ID, f"request {rid!r} is still in flight")
            return
        match request:
            case wire.HelloRequest():
                await self._reply(wire.DoneReply(id=rid, server="exlsp", version=__version__, protocol=wire.PROTOCOL))
            case wire.StatusRequest():
                try:
                    status = self.server.status()
                except Exception as exc:
                    log.exception("status failed")
                    await self._error(rid, wire.INTERNAL, _one_line(exc))
                else:
                    await self._reply(wire.DoneReply(id=rid, status=status))
            case wire.CancelRequest(target=target):
                scope = self.inflight.get(target)
                if scope is not None:
                    scope.cancel()
                await self._reply(wire.DoneReply(id=rid))
            case _:
                if len(self.inflight) >= self.server.max_inflight_per_conn:
                    limit = self.server.max_inflight_per_conn
                    await self._error(rid, wire.TOO_MANY_REQUESTS, f"at most {limit} requests in flight per connection")
                    return
                # Registered before the task starts, so that a cancel on the next line finds it.
                scope = self.inflight[rid] = anyio.CancelScope()
                self._active += 1
                assert self._tg is not None
                self._tg.start_soon(self._run, request, scope)

    # -- running a request

    async def _run(self, request: wire.Request, scope: anyio.CancelScope) -> None:
        rid = request.id
        reply: wire.DoneReply | wire.ErrorReply | wire.CancelledReply | None = None
        try:
            try:
                with scope:
                    reply = await self._dispatch(request)
            except SessionError as exc:
                reply = wire.ErrorReply(id=rid, code=wire.INVALID_REQUEST, message=_one_line(exc))
            except Exception as exc:
                log.exception("%s request failed", request.__struct_config__.tag)
                reply = wire.ErrorReply(id=rid, code=wire.INTERNAL, message=_one_line(exc))
            finally:
                del self.inflight[rid]
            await self._reply(reply or wire.CancelledReply(id=rid))
        finally:
            self._active -= 1

    async def _dispatch(self, request: wire.Request) -> wire.DoneReply | wire.ErrorReply | wire.CancelledReply:
        services = self.server.services
        rid = request.id
        match request:
            case wire.SuggestRequest():
                answer = await services.suggest(request.to_query())
                return _ended(rid, answer) or wire.DoneReply(id=rid, suggestions=_safe_suggestions(answer))
            case wire.CompleteRequest():
                answer = await services.complete(request.to_query(), self._delta_sender(rid))
            case wire.ChatRequest():
                query = request.to_query()
                if query.session is None:
                    answer = await services.chat(query, self._delta_sender(rid))
                else:
                    answer = await self._sessions().chat(services, query, self._delta_sender(rid))
            case wire.SessionsRequest() | wire.SessionRequest() | wire.SessionDeleteRequest():
                return await self._session_request(request)
            case _:
                raise TypeError(f"no handler for {type(request).__name__}")
        return _ended(rid, answer) or _text_done(rid, answer)

    def _sessions(self) -> ChatSessions:
        if self.server.sessions is None:
            raise SessionError("this exlsp process keeps no chat sessions")
        return self.server.sessions

    async def _session_request(
        self, request: wire.SessionsRequest | wire.SessionRequest | wire.SessionDeleteRequest
    ) -> wire.DoneReply | wire.ErrorReply:
        sessions, rid = self._sessions(), request.id
        match request:
            case wire.SessionsRequest(limit=limit):
                return wire.DoneReply(id=rid, sessions=[_session_info(s) for s in await sessions.list(limit)])
            case wire.SessionRequest(session=sid, limit=limit):
                found = await sessions.get(sid, limit)
                if found is None:
                    return wire.ErrorReply(id=rid, code=wire.NOT_FOUND, message=f"no chat session {sid!r}")
                info, messages = found
                stored = [wire.StoredMessage(m.role, m.content, m.created, m.complete) for m in messages]  # type: ignore[arg-type]
                return wire.DoneReply(id=rid, session=_session_info(info), messages=stored)
            case wire.SessionDeleteRequest(session=sid):
                return wire.DoneReply(id=rid, deleted=await sessions.delete(sid))
        raise TypeError(f"no handler for {type(request).__name__}")

    def _delta_sender(self, rid: int | str) -> OnDelta:
        async def on_delta(text: str) -> None:
            if text:
                await self._reply(wire.DeltaReply(id=rid, text=text))

        return on_delta

    # -- writing

    async def _error(self, rid: int | str | None, code: str, message: str) -> None:
        await self._reply(wire.ErrorReply(id=rid, code=code, message=message))

    async def _reply(self, message: wire.Reply) -> None:
        try:
            data = wire.encode(message)
        except Exception:  # e.g. a status value msgspec cannot encode
            log.exception("cannot encode a %s reply", type(message).__name__)
            if not isinstance(message, wire.TERMINAL):
                return
            data = wire.encode(wire.ErrorReply(id=message.id, code=wire.INTERNAL, message="the reply could not be encoded"))
        try:
            await self._out.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the connection is going away; its task group is being cancelled

    async def _write_loop(self) -> None:
        async with self._queued:
            async for data in self._queued:
                try:
                    with anyio.fail_after(self.server.send_timeout_s):
                        await self.stream.send(data)
                except TimeoutError:
                    log.warning("dropping a socket client that stopped reading its replies")
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
                else:
                    continue
                assert self._tg is not None
                self._tg.cancel_scope.cancel()
                return


# ---- answers to replies --------------------------------------------------------------------------


def _ended(rid: int | str, answer: Answer) -> wire.ErrorReply | wire.CancelledReply | None:
    """The terminal reply for an answer that reports a cancelled or failed generation."""
    reason = answer.stop_reason or getattr(answer.stats, "stop_reason", "") or ""
    if reason in ("cancelled", "superseded"):
        return wire.CancelledReply(id=rid)
    if reason == "error":
        detail = getattr(answer.stats, "error", None) or "the generation failed"
        return wire.ErrorReply(id=rid, code=wire.INTERNAL, message=_one_line(str(detail)))
    return None


def _text_done(rid: int | str, answer: Answer) -> wire.DoneReply:
    stats = answer.stats

    def stat(name: str, digits: int | None = None) -> Any:
        value = getattr(stats, name, None)
        return round(value, digits) if digits is not None and isinstance(value, float) else value

    return wire.DoneReply(
        id=rid,
        text=answer.text,
        items=list(answer.items) if len(answer.items) > 1 else None,
        stop_reason=answer.stop_reason or stat("stop_reason"),
        prompt_tokens=stat("prompt_tokens"),
        reused_tokens=stat("reused_tokens"),
        generated_tokens=stat("generated_tokens"),
        ttft_ms=stat("ttft_ms", 2),
        total_ms=stat("total_ms", 2),
    )


def _session_info(info: Any) -> wire.SessionInfo:
    return wire.SessionInfo(id=info.id, title=info.title, created=info.created, updated=info.updated,
                            messages=info.messages)


def _safe_suggestions(answer: Answer) -> list[wire.Suggestion]:
    """Defence in depth: whatever the assistant did, no suggestion leaves with a terminal escape,
    on more than one line, or with a risk lower than the classifier's."""
    out = []
    for s in answer.suggestions:
        text = shell_risk.sanitize(s.text)
        if not text.strip():
            continue
        risk, reason = shell_risk.classify(text)
        given = s.risk if s.risk in shell_risk.LEVELS else None
        if given is not None and shell_risk.max_risk(given, risk) == given:
            risk, reason = given, s.reason or reason
        out.append(wire.Suggestion(text=text, risk=risk, reason=shell_risk.sanitize(reason)))
    return out
