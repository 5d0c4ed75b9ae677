"""Clients of the Unix socket: a blocking one for the CLI (``exlsp suggest/chat/status``) and an
async, multiplexing one for tests and tools.

Both find the socket as the server does (``resolve_socket_path``), say plainly when nothing listens
(``NoServer``: "no exlsp process is running (socket PATH)"), and turn an ``error`` reply into
``RequestFailed`` and a ``cancelled`` reply into ``RequestCancelled``. Shells should not use
Python per keystroke (45-155 ms a start): they speak the protocol themselves (docs/protocol.md).

Both also check who answers: a server of another user is refused before a byte is sent. Without
``$XDG_RUNTIME_DIR`` the socket is in ``/tmp/exlsp-$UID``, which anyone can create first and listen
in, to read what we type (history is redacted only by the server) and to answer as it likes.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections import deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar

import anyio
import anyio.abc
import msgspec

from exlsp.runtime.errors import ExlspError

from . import wire
from .socket_paths import resolve_socket_path
from .socket_server import peer_credentials

R = TypeVar("R", bound=msgspec.Struct)
OnText = Callable[[str], Awaitable[None] | None]
MAX_REPLY_BYTES = 64 * 1024 * 1024


class NoServer(ExlspError):
    def __init__(self, path: Path, detail: str = "") -> None:
        super().__init__(f"no exlsp process is running (socket {path}){': ' + detail if detail else ''}")
        self.path = path


class ServerGone(ExlspError):
    """The server closed the connection before answering."""


class RequestFailed(ExlspError):
    def __init__(self, code: str, message: str, id: int | str | None = None) -> None:
        super().__init__(f"exlsp: {message} ({code})")
        self.code, self.message, self.id = code, message, id


class RequestCancelled(ExlspError):
    def __init__(self, id: int | str) -> None:
        super().__init__(f"request {id!r} was cancelled")
        self.id = id


def _connect_error(path: Path, exc: OSError) -> ExlspError:
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        return NoServer(path)
    if isinstance(exc, PermissionError):
        return NoServer(path, "permission denied (the socket belongs to another user?)")
    return NoServer(path, exc.strerror or str(exc))


def check_server(sock: socket.socket, path: Path) -> None:
    """Raise ``NoServer`` unless the process serving ``sock`` runs as our own user."""
    try:
        creds = peer_credentials(sock)
    except OSError as exc:
        raise NoServer(path, f"cannot tell who serves it ({exc.strerror or exc})") from None
    if creds is not None and creds[1] != os.getuid():
        raise NoServer(path, f"it is served by another user (uid {creds[1]}), not by you; not used")


def _terminal_result(reply: wire.Reply) -> wire.DoneReply:
    if isinstance(reply, wire.ErrorReply):
        raise RequestFailed(reply.code, reply.message, reply.id)
    if isinstance(reply, wire.CancelledReply):
        raise RequestCancelled(reply.id)  # type: ignore[arg-type]
    assert isinstance(reply, wire.DoneReply)
    return reply


def _chat_messages(messages: str | list[Any]) -> list[wire.ChatMessage]:
    if isinstance(messages, str):
        return [wire.ChatMessage(role="user", content=messages)]
    return [m if isinstance(m, wire.ChatMessage) else msgspec.convert(m, wire.ChatMessage, from_attributes=True) for m in messages]


# ---- blocking client -----------------------------------------------------------------------------


class Client:
    """One request at a time over one connection. ``with Client() as c: c.suggest("git ch")``."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, client: str = "exlsp-cli", timeout: float | None = 60.0, hello: bool = True
    ) -> None:
        self.path = resolve_socket_path(path)
        self._ids = itertools.count(1)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(os.fspath(self.path))
        except OSError as exc:
            self._sock.close()
            raise _connect_error(self.path, exc) from None
        try:
            check_server(self._sock, self.path)
        except NoServer:
            self._sock.close()
            raise
        self._file = self._sock.makefile("rb")
        self.server: wire.DoneReply | None = None
        if hello:
            try:
                self.server = self.request(wire.HelloRequest, client=client)
            except BaseException:
                self.close()
                raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def stream(self, kind: type[R], **fields: Any) -> Iterator[wire.Reply]:
        """Send one request; yield its replies, the terminal one last (not raised)."""
        rid = next(self._ids)
        message = kind(id=rid, **fields)  # type: ignore[call-arg]
        try:
            self._sock.sendall(wire.encode(message))
            while True:
                line = self._file.readline(MAX_REPLY_BYTES)
                if not line:
                    raise ServerGone(f"the exlsp process at {self.path} closed the connection")
                reply = wire.decode_reply(line)
                if reply.id != rid:
                    continue  # an answer to a line we did not send as a request (cannot happen here)
                yield reply
                if isinstance(reply, wire.TERMINAL):
                    return
        except TimeoutError:
            raise ExlspError(f"exlsp did not answer in time (socket {self.path})") from None
        except (BrokenPipeError, ConnectionResetError):
            raise ServerGone(f"the exlsp process at {self.path} closed the connection") from None

    def request(self, kind: type[R], *, on_delta: Callable[[str], Any] | None = None, **fields: Any) -> wire.DoneReply:
        for reply in self.stream(kind, **fields):
            if isinstance(reply, wire.DeltaReply):
                if on_delta is not None:
                    on_delta(reply.text)
            else:
                return _terminal_result(reply)
        raise ServerGone("no terminal reply")  # stream() always ends with one

    def suggest(self, buffer: str, **fields: Any) -> wire.DoneReply:
        return self.request(wire.SuggestRequest, buffer=buffer, **fields)

    def complete(self, prefix: str, *, on_delta: Callable[[str], Any] | None = None, **fields: Any) -> wire.DoneReply:
        return self.request(wire.CompleteRequest, prefix=prefix, on_delta=on_delta, **fields)

    def chat(self, messages: str | list[Any], *, on_delta: Callable[[str], Any] | None = None, **fields: Any) -> wire.DoneReply:
        return self.request(wire.ChatRequest, messages=_chat_messages(messages), on_delta=on_delta, **fields)

    def status(self) -> dict[str, Any]:
        return self.request(wire.StatusRequest).status or {}


# ---- async client --------------------------------------------------------------------------------


class Pending:
    """A request in flight on an ``AsyncClient``: iterate its replies, or await ``result()``."""

    def __init__(self, client: AsyncClient, rid: int | str) -> None:
        self.client, self.id = client, rid
        self.terminal: wire.Reply | None = None
        self._items: deque[wire.Reply | BaseException] = deque()
        self._arrived = anyio.Event()

    def _put(self, item: wire.Reply | BaseException) -> None:
        self._items.append(item)
        self._arrived.set()

    async def __aiter__(self) -> AsyncIterator[wire.Reply]:
        while True:
            while not self._items:
                self._arrived = anyio.Event()
                await self._arrived.wait()
            item = self._items.popleft()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, wire.TERMINAL):
                self.terminal = item
            yield item
            if self.terminal is not None:
                return

    async def result(self, on_delta: OnText | None = None) -> wire.DoneReply:
        async for reply in self:
            if isinstance(reply, wire.DeltaReply) and on_delta is not None:
                maybe = on_delta(reply.text)
                if maybe is not None:
                    await maybe
        assert self.terminal is not None
        return _terminal_result(self.terminal)

    async def cancel(self) -> None:
        await self.client.request(wire.CancelRequest, target=self.id)


class AsyncClient:
    """Many requests in flight on one connection. Open it with ``async with connect(...)``."""

    def __init__(self, stream: anyio.abc.SocketStream, path: Path) -> None:
        self.stream, self.path = stream, path
        self.server: wire.DoneReply | None = None
        self.unrouted: list[wire.Reply] = []  # replies with a null or unknown id (errors on bad lines)
        self._ids = itertools.count(1)
        self._pending: dict[int | str, Pending] = {}
        self._send_lock = anyio.Lock()
        self._gone: BaseException | None = None

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (tests of bad input)."""
        async with self._send_lock:
            await self.stream.send(data)

    async def open(self, kind: type[R], *, id: int | str | None = None, **fields: Any) -> Pending:
        rid = next(self._ids) if id is None else id
        if self._gone is not None:
            raise ServerGone(str(self._gone))
        pending = self._pending[rid] = Pending(self, rid)
        await self.send_raw(wire.encode(kind(id=rid, **fields)))  # type: ignore[call-arg]
        return pending

    async def request(self, kind: type[R], *, on_delta: OnText | None = None, **fields: Any) -> wire.DoneReply:
        return await (await self.open(kind, **fields)).result(on_delta)

    async def suggest(self, buffer: str, **fields: Any) -> wire.DoneReply:
        return await self.request(wire.SuggestRequest, buffer=buffer, **fields)

    async def complete(self, prefix: str, *, on_delta: OnText | None = None, **fields: Any) -> wire.DoneReply:
        return await self.request(wire.CompleteRequest, prefix=prefix, on_delta=on_delta, **fields)

    async def chat(self, messages: str | list[Any], *, on_delta: OnText | None = None, **fields: Any) -> wire.DoneReply:
        return await self.request(wire.ChatRequest, messages=_chat_messages(messages), on_delta=on_delta, **fields)

    async def status(self) -> dict[str, Any]:
        return (await self.request(wire.StatusRequest)).status or {}

    async def _read_loop(self) -> None:
        try:
            async for line in self._lines():
                reply = wire.decode_reply(line)
                pending = self._pending.get(reply.id) if reply.id is not None else None
                if pending is None:
                    self.unrouted.append(reply)
                    continue
                if isinstance(reply, wire.TERMINAL):
                    del self._pending[reply.id]  # type: ignore[arg-type]
                pending._put(reply)
            self._gone = ServerGone(f"the exlsp process at {self.path} closed the connection")
        except OSError:
            self._gone = ServerGone(f"the exlsp process at {self.path} closed the connection")
        except (msgspec.DecodeError, ValueError) as exc:
            self._gone = ServerGone(f"unreadable reply from {self.path}: {exc}")
        for pending in self._pending.values():
            pending._put(self._gone)
        self._pending.clear()

    async def _lines(self) -> AsyncIterator[bytes]:
        # Straight from the raw socket with wait_readable: anyio's stream receive can log an
        # InvalidStateError on asyncio when cancelled as data arrives (anyio#1267).
        sock = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        buf = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                await anyio.wait_readable(sock)
                continue
            if not chunk:
                return
            buf += chunk
            while (nl := buf.find(b"\n")) >= 0:
                yield bytes(buf[:nl])
                del buf[: nl + 1]
            if len(buf) > MAX_REPLY_BYTES:
                raise ValueError(f"a reply longer than {MAX_REPLY_BYTES} bytes")


@asynccontextmanager
async def connect(
    path: str | os.PathLike[str] | None = None, *, client: str = "exlsp", hello: bool = True
) -> AsyncIterator[AsyncClient]:
    """``async with connect() as c: await c.suggest("git ch")``."""
    resolved = resolve_socket_path(path)
    try:
        stream = await anyio.connect_unix(resolved)
    except OSError as exc:
        raise _connect_error(resolved, exc) from None
    try:
        check_server(stream.extra(anyio.abc.SocketAttribute.raw_socket), resolved)
    except NoServer:
        await stream.aclose()
        raise
    try:
        async with stream, anyio.create_task_group() as tg:
            c = AsyncClient(stream, resolved)
            tg.start_soon(c._read_loop)
            try:
                if hello:
                    c.server = await c.request(wire.HelloRequest, client=client)
                yield c
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The caller's own exception comes back wrapped by the task group: unwrap it.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
