"""Fuzz the socket server's line framing (``SocketServer`` / ``_read_loop``) with byte chunks.

Input: the first byte picks the line limit (16..79 bytes, so that ``too_large`` is in reach;
0xF0 and above: the default 1,000,000);
the rest are chunks separated by 0xFF (never part of UTF-8). A real ``SocketServer`` with instant
fake services handles a real connection over a socket pair; each chunk is sent once the server
has read the previous one, so the server's reads see exactly these chunk boundaries; then the
client shuts down its writing side and reads every reply until the server closes.

Checked against a model that splits the whole byte stream at ``\\n`` (a last piece without one is
not a line, as the protocol says, unless it is already too long):

- every reply is one valid reply line, and the connection ends (no hang, no exception logged);
- every line gets exactly one terminal reply (blank lines none), an over-long one ``too_large``;
- the replies that depend only on a line's bytes (``parse_error``, ``invalid_request``,
  ``unknown_type``, ``too_large``) come in the lines' order with the model's codes and ids.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzzlib import fuzz, instrumented  # noqa: E402

with instrumented(__name__):
    import fcntl
    import termios

    import anyio
    import anyio.abc

    from exlsp.lsp import wire
    from exlsp.lsp.socket_server import SocketServer
    from exlsp.plugins.api import Answer, Suggestion
    from exlsp.runtime import Completion

SEP = b"\xff"
DETERMINISTIC = {wire.PARSE_ERROR, wire.INVALID_REQUEST, wire.UNKNOWN_TYPE, wire.TOO_LARGE}
TIMEOUT_S = 10.0


class FakeServices:
    """Instant answers: a completion/chat streams two deltas, a suggestion echoes the buffer."""

    async def suggest(self, query):
        return Answer(text=query.buffer, suggestions=[Suggestion(query.buffer + " --help")], stop_reason="eos")

    async def _stream(self, text: str, on_delta) -> Answer:
        for piece in (text[:1], text[1:]):
            await on_delta(piece)
        stats = Completion(text=text, tokens=[1, 2], stop_reason="eos", prompt_tokens=3, reused_tokens=0,
                           generated_tokens=2, ttft_ms=0.1, total_ms=0.2)
        return Answer(text=text, stats=stats, stop_reason="eos")

    async def complete(self, query, on_delta):
        return await self._stream(query.prefix[-8:] or "x", on_delta)

    async def chat(self, query, on_delta):
        return await self._stream(query.messages[-1].content[-8:] or "x", on_delta)

    def status(self):
        return {"model": "fake", "backend": "fake", "model_loads": 1}


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _session_bound(request: object) -> bool:
    """Chat-session requests, refused by a server without a session store with an
    ``invalid_request`` that comes from the request's task, not from its line."""
    tag = request.__struct_config__.tag  # type: ignore[attr-defined]
    return tag in ("sessions", "session", "session_delete") or getattr(request, "session", None) is not None


def model(stream: bytes, limit: int) -> tuple[int, list[tuple[str, object]], list[tuple[str, object]]]:
    """(terminal replies expected, the deterministic error replies in order, the replies that
    session-bound requests may add to those)."""
    lines = stream.split(b"\n")  # the last one, unterminated, is a request too (the peer half-closes)
    answered = 0
    errors: list[tuple[str, object]] = []
    extra: list[tuple[str, object]] = []
    for line in lines:
        if len(line) > limit:
            answered += 1
            errors.append((wire.TOO_LARGE, None))
        elif line.strip():
            answered += 1
            try:
                request = wire.decode_request(line)
            except wire.WireError as exc:
                errors.append((exc.code, exc.id))
            else:
                if _session_bound(request):
                    extra.append((wire.INVALID_REQUEST, request.id))
    return answered, errors, extra


def _unread(sock: socket.socket) -> int:
    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little")


async def _converse(chunks: list[bytes], limit: int) -> bytes:
    server_sock, client_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server = SocketServer(Path(tempfile.gettempdir()) / "exlsp-fuzz-unused.sock", FakeServices(),
                          max_line_bytes=limit, send_timeout_s=TIMEOUT_S)
    received = bytearray()
    with server_sock, client_sock:
        server_stream = await anyio.abc.UNIXSocketStream.from_socket(server_sock)
        client = await anyio.abc.UNIXSocketStream.from_socket(client_sock)

        async def read_all() -> None:
            while True:
                try:
                    received.extend(await client.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return

        with anyio.fail_after(TIMEOUT_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(server._handle, server_stream)
                tg.start_soon(read_all)
                for chunk in chunks:
                    if not chunk:
                        continue
                    await client.send(chunk)
                    while server_sock.fileno() >= 0 and _unread(server_sock):
                        await anyio.sleep(0)  # the server's next read is this chunk, whole
                await client.send_eof()
        await client.aclose()
    return bytes(received)


def check(chunks: list[bytes], limit: int) -> None:
    errors = _Errors()
    logger = logging.getLogger("exlsp")
    logger.addHandler(errors)
    try:
        out = anyio.run(_converse, chunks, limit)
    finally:
        logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
    assert not out or out.endswith(b"\n"), out[-200:]
    replies = [wire.decode_reply(line) for line in out.split(b"\n")[:-1]]
    terminal = [r for r in replies if isinstance(r, wire.TERMINAL)]
    answered, expected, extra = model(b"".join(chunks), limit)
    got = [(r.code, r.id) for r in terminal if isinstance(r, wire.ErrorReply) and r.code in DETERMINISTIC]
    for reply in extra:  # equal tuples are interchangeable: which one goes does not matter
        if reply in got:
            got.remove(reply)
    assert got == expected, (got, expected)
    assert len(terminal) == answered, (len(terminal), answered, replies)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    limit = 16 + data[0] % 64 if data[0] < 0xF0 else 1_000_000
    check(data[1:].split(SEP), limit)


if __name__ == "__main__":
    fuzz(TestOneInput)
