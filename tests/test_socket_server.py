"""The Unix socket server end to end: real sockets, a scripted FakeServices, and one class against
the real default model (SmolLM2 through llama.cpp)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.streams.buffered
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exlsp import __version__
from exlsp.lsp import socket_client, socket_server, wire
from exlsp.lsp.socket_paths import SocketInUse, SocketSetupError, claim_socket, resolve_socket_path
from exlsp.lsp.socket_server import SocketServer, peer_allowed
from exlsp.plugins.api import Answer, Suggestion
from exlsp.runtime import Completion, Delta, GenerationRequest, Priority

WAIT = 10.0


class FakeServices:
    """Instant by default; ``delay`` between deltas; ``hang`` after the first delta; ``fail`` raises."""

    def __init__(self, *, deltas=("def", " add", "(a, b)"), delay=0.0, hang=False, fail=None, suggestions=None,
                 stop_reason="eos") -> None:
        self.deltas, self.delay, self.hang, self.fail = list(deltas), delay, hang, fail
        self.suggestions = suggestions
        self.stop_reason = stop_reason
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.sent = 0  # deltas accepted by on_delta

    async def _stream(self, key: str, on_delta) -> Answer:
        self.started.append(key)
        try:
            if self.fail is not None:
                raise self.fail
            for i, text in enumerate(self.deltas):
                if self.delay:
                    await anyio.sleep(self.delay)
                await on_delta(text)
                self.sent += 1
                if self.hang and i == 0:
                    await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(key)
            raise
        text = "".join(self.deltas)
        stats = Completion(text=text, tokens=[1] * len(self.deltas), stop_reason=self.stop_reason, prompt_tokens=7,
                           reused_tokens=3, generated_tokens=len(self.deltas), ttft_ms=1.23456, total_ms=4.5)
        return Answer(text=text, stats=stats, stop_reason=self.stop_reason)

    async def suggest(self, query):
        if self.fail is not None:
            raise self.fail
        if self.hang:
            self.started.append(query.buffer)
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(query.buffer)
                raise
        items = self.suggestions if self.suggestions is not None else [Suggestion(query.buffer + "eckout main")]
        return Answer(text=items[0].text if items else "", suggestions=items, stop_reason=self.stop_reason)

    async def complete(self, query, on_delta):
        return await self._stream(query.prefix, on_delta)

    async def chat(self, query, on_delta):
        return await self._stream(query.messages[-1].content, on_delta)

    def status(self) -> dict[str, Any]:
        return {"model": "fake", "backend": "fake", "model_loads": 1}


@pytest.fixture
def sock_dir():
    # Short: AF_UNIX paths hold ~104 bytes, and pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="exl-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sock_path(sock_dir):
    return sock_dir / "run" / "exlsp.sock"


@asynccontextmanager
async def running(services, path: Path, **kwargs):
    server = SocketServer(path, services, **kwargs)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # show the test's own failure, not the task group's wrapper
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


class Raw:
    """A bare line-level client, to see exactly what the server writes."""

    def __init__(self, stream):
        self.stream = stream
        self.reader = anyio.streams.buffered.BufferedByteReceiveStream(stream)

    @classmethod
    @asynccontextmanager
    async def connect(cls, path):
        stream = await anyio.connect_unix(path)
        async with stream:
            yield cls(stream)

    async def send(self, message) -> None:
        data = message if isinstance(message, bytes) else (json.dumps(message) + "\n").encode()
        await self.stream.send(data)

    async def recv(self, timeout: float = WAIT) -> dict:
        with anyio.fail_after(timeout):
            return json.loads(await self.reader.receive_until(b"\n", 10_000_000))

    async def until_terminal(self, *ids) -> dict[Any, list[dict]]:
        """Every reply until each of ``ids`` has had its terminal reply, grouped by id."""
        seen: dict[Any, list[dict]] = {}
        left = set(ids)
        while left:
            reply = await self.recv()
            seen.setdefault(reply["id"], []).append(reply)
            if reply["type"] in ("done", "error", "cancelled"):
                left.discard(reply["id"])
        return seen

    async def eof(self, timeout: float = WAIT) -> bool:
        with anyio.fail_after(timeout):
            try:
                await self.reader.receive_until(b"\n", 10_000_000)
            except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError):
                return True
        return False


async def wait_for(predicate, timeout: float = WAIT) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


# ---- every message type -------------------------------------------------------------------------


async def test_hello(sock_path):
    async with running(FakeServices(), sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "hello", "id": 1, "protocol": 1, "client": "zsh"})
        assert await c.recv() == {"type": "done", "id": 1, "server": "exlsp", "version": __version__, "protocol": 1}


async def test_status_carries_the_services_status_and_socket_info(sock_path):
    async with running(FakeServices(), sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "status", "id": "s"})
        reply = await c.recv()
        assert reply["type"] == "done" and reply["id"] == "s"
        assert reply["status"]["model"] == "fake" and reply["status"]["model_loads"] == 1
        assert reply["status"]["socket"] == {"path": str(sock_path), "connections": 1, "requests_in_flight": 0}


async def test_suggest_sanitizes_and_never_lowers_risk(sock_path):
    services = FakeServices(suggestions=[
        Suggestion("git checkout main\x1b[31m\x1b]0;title\x07"),
        Suggestion("rm -rf /", risk="low", reason="model thinks it is fine"),
        Suggestion("ls -la", risk="high", reason="the assistant knows better"),
        Suggestion("echo hi\nrm -rf ~", risk="", reason=""),  # type: ignore[arg-type]
        Suggestion("\x1b[2J\n"),
    ])
    async with running(services, sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "suggest", "id": 2, "buffer": "git ch", "cwd": "/", "history": ["ls"]})
        reply = await c.recv()
    assert reply == {"type": "done", "id": 2, "suggestions": [
        {"text": "git checkout main", "risk": "low", "reason": ""},
        {"text": "rm -rf /", "risk": "high", "reason": "deletes / recursively"},
        {"text": "ls -la", "risk": "high", "reason": "the assistant knows better"},
        {"text": "echo hi", "risk": "low", "reason": ""},
    ]}


async def test_complete_streams_then_done_with_stats(sock_path):
    async with running(FakeServices(), sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "complete", "id": 3, "prefix": "def add(a, b):\n    ", "language": "python"})
        replies = (await c.until_terminal(3))[3]
    assert [r["text"] for r in replies[:-1]] == ["def", " add", "(a, b)"]
    assert all(r["type"] == "delta" for r in replies[:-1])
    assert replies[-1] == {"type": "done", "id": 3, "text": "def add(a, b)", "stop_reason": "eos", "prompt_tokens": 7,
                           "reused_tokens": 3, "generated_tokens": 3, "ttft_ms": 1.23, "total_ms": 4.5}


async def test_chat_streams(sock_path):
    services = FakeServices(deltas=["It ", "rebases."])
    async with running(services, sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "chat", "id": 4, "messages": [{"role": "user", "content": "rebase?"}]})
        replies = (await c.until_terminal(4))[4]
    assert [r["type"] for r in replies] == ["delta", "delta", "done"]
    assert replies[-1]["text"] == "It rebases." and services.started == ["rebase?"]


async def test_multiplexed_streams_interleave_and_each_ends_once(sock_path):
    services = FakeServices(deltas=[f"t{i} " for i in range(8)], delay=0.01)
    async with running(services, sock_path), Raw.connect(sock_path) as c:
        await c.send(b"".join(wire.encode(r) for r in [
            wire.CompleteRequest(id=1, prefix="a"),
            wire.ChatRequest(id="two", messages=[wire.ChatMessage("user", "b")]),
            wire.CompleteRequest(id=3, prefix="c"),
            wire.StatusRequest(id=4),
        ]))
        seen = await c.until_terminal(1, "two", 3, 4)
    for rid in (1, "two", 3):
        replies = seen[rid]
        assert [r["type"] for r in replies] == ["delta"] * 8 + ["done"]
        assert "".join(r["text"] for r in replies[:-1]) == replies[-1]["text"]
    assert [r["type"] for r in seen[4]] == ["done"]


async def test_interleaving_is_visible_on_the_wire(sock_path):
    services = FakeServices(deltas=["x"] * 5, delay=0.02)
    async with running(services, sock_path), Raw.connect(sock_path) as c:
        await c.send(wire.encode(wire.CompleteRequest(id=1, prefix="a")) + wire.encode(wire.CompleteRequest(id=2, prefix="b")))
        ids = []
        while len([i for i in ids if i == "end"]) < 2:
            r = await c.recv()
            ids.append("end" if r["type"] == "done" else r["id"])
    first_end = ids.index("end")
    assert {1, 2} <= set(ids[:first_end])  # both streamed before either finished


# ---- cancellation -------------------------------------------------------------------------------


async def test_cancel_message(sock_path):
    services = FakeServices(hang=True)
    async with running(services, sock_path) as server, Raw.connect(sock_path) as c:
        await c.send({"type": "chat", "id": 4, "messages": [{"role": "user", "content": "long"}]})
        assert (await c.recv())["type"] == "delta"
        await c.send({"type": "cancel", "id": 5, "target": 4})
        seen = await c.until_terminal(4, 5)
        assert seen[4] == [{"type": "cancelled", "id": 4}]
        assert seen[5] == [{"type": "done", "id": 5}]
        assert services.cancelled == ["long"]
        assert server.requests_in_flight == 0
        # A cancel for nothing in flight is answered too, and the id 4 is free again.
        await c.send({"type": "cancel", "id": 6, "target": 4})
        assert await c.recv() == {"type": "done", "id": 6}


async def test_cancel_right_after_the_request_line(sock_path):
    services = FakeServices(hang=True)
    async with running(services, sock_path), Raw.connect(sock_path) as c:
        await c.send(wire.encode(wire.SuggestRequest(id=1, buffer="x")) + wire.encode(wire.CancelRequest(id=2, target=1)))
        seen = await c.until_terminal(1, 2)
    assert seen[1] == [{"type": "cancelled", "id": 1}] and seen[2] == [{"type": "done", "id": 2}]


async def test_disconnect_cancels_in_flight_jobs(sock_path):
    services = FakeServices(hang=True)
    async with running(services, sock_path) as server:
        async with Raw.connect(sock_path) as c:
            await c.send({"type": "complete", "id": 1, "prefix": "one"})
            await c.send({"type": "suggest", "id": 2, "buffer": "two"})
            assert (await c.recv())["type"] == "delta"
            await wait_for(lambda: len(services.started) == 2)
        await wait_for(lambda: sorted(services.cancelled) == ["one", "two"])
        await wait_for(lambda: server.connections == 0)


async def test_half_closed_client_still_gets_its_answer(sock_path):
    services = FakeServices(delay=0.05)
    async with running(services, sock_path), Raw.connect(sock_path) as c:
        await c.send(wire.encode(wire.CompleteRequest(id=1, prefix="p")) + wire.encode(wire.HelloRequest(id=2)))
        await c.stream.send_eof()  # like socat / nc -N at the end of their input
        seen = await c.until_terminal(1, 2)
        assert seen[1][-1]["type"] == "done" and seen[2][0]["type"] == "done"
        assert await c.eof()
    assert services.cancelled == []


async def test_a_last_line_without_its_newline_is_answered_after_a_half_close(sock_path):
    """`printf '{"type":"hello","id":1}' | nc -N -U SOCK`: no newline at the end, then EOF."""
    async with running(FakeServices(), sock_path), Raw.connect(sock_path) as c:
        await c.send(wire.encode(wire.HelloRequest(id=1)) + wire.encode(wire.StatusRequest(id=2)).rstrip(b"\n"))
        await c.stream.send_eof()
        seen = await c.until_terminal(1, 2)
        assert seen[1][0]["type"] == "done" and seen[2][0]["type"] == "done" and "status" in seen[2][0]
        assert await c.eof()


async def test_superseded_answer_is_reported_as_cancelled(sock_path):
    async with running(FakeServices(stop_reason="superseded"), sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "suggest", "id": 1, "buffer": "gi"})
        assert await c.recv() == {"type": "cancelled", "id": 1}


# ---- bad input ----------------------------------------------------------------------------------


BAD = [
    (b"{not json\n", "parse_error", None),
    (b"\xff\xfe\n", "parse_error", None),
    (b"[1,2]\n", "invalid_request", None),
    (b'{"type":"suggest","id":7}\n', "invalid_request", 7),
    (b'{"type":"suggest","id":8,"buffer":3}\n', "invalid_request", 8),
    (b'{"type":"hello"}\n', "invalid_request", None),
    (b'{"type":"teleport","id":9}\n', "unknown_type", 9),
    (b'{"type":"complete","id":10,"prefix":"x","max_tokens":-1}\n', "invalid_request", 10),
]


async def test_bad_lines_get_errors_and_the_connection_keeps_working(sock_path):
    async with running(FakeServices(), sock_path), Raw.connect(sock_path) as c:
        for line, code, rid in BAD:
            await c.send(line)
            reply = await c.recv()
            assert (reply["type"], reply["code"], reply["id"]) == ("error", code, rid), line
            assert reply["message"] and "\n" not in reply["message"]
        await c.send(b"\n   \r\n")  # blank lines are ignored
        await c.send({"type": "hello", "id": 11})
        assert (await c.recv())["id"] == 11


async def test_duplicate_id_while_in_flight(sock_path):
    services = FakeServices(delay=0.1, deltas=["a", "b"])
    async with running(services, sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "complete", "id": 1, "prefix": "x"})
        await c.send({"type": "chat", "id": 1, "messages": [{"role": "user", "content": "y"}]})
        seen = await c.until_terminal(1)
        errors = [r for r in seen[1] if r["type"] == "error"]
        assert len(errors) == 1 and errors[0]["code"] == "duplicate_id"
        # The first request is unharmed and ends once; afterwards the id is free.
        rest = await c.until_terminal(1)
        assert rest[1][-1]["type"] == "done" and rest[1][-1]["text"] == "ab"
        await c.send({"type": "hello", "id": 1})
        assert (await c.recv())["type"] == "done"


async def test_too_many_requests_in_flight(sock_path):
    services = FakeServices(hang=True)
    async with running(services, sock_path, max_inflight_per_conn=2), Raw.connect(sock_path) as c:
        for i in range(3):
            await c.send({"type": "suggest", "id": i, "buffer": f"b{i}"})
        reply = await c.recv()
        assert (reply["type"], reply["id"], reply["code"]) == ("error", 2, "too_many_requests")
        await c.send({"type": "status", "id": "s"})  # immediate requests still work
        assert (await c.recv())["id"] == "s"


async def test_over_long_lines_are_refused_and_skipped(sock_path):
    async with running(FakeServices(), sock_path, max_line_bytes=1000) as server, Raw.connect(sock_path) as c:
        # One line arriving in many chunks, never buffered whole.
        await c.send(b'{"type":"suggest","id":1,"buffer":"')
        for _ in range(50):
            await c.send(b"x" * 4000)
        await c.send(b'"}\n{"type":"hello","id":2}\n')
        assert (await c.recv()) == {"type": "error", "id": None, "code": "too_large", "message": "line longer than 1000 bytes"}
        assert (await c.recv())["id"] == 2
        # One too long line complete in a single chunk, then a good one in the same chunk.
        await c.send(b"y" * 5000 + b'\n{"type":"hello","id":3}\n')
        assert (await c.recv())["code"] == "too_large"
        assert (await c.recv())["id"] == 3
        assert server.connections == 1


async def test_service_exception_is_one_line_internal_error(sock_path, caplog):
    services = FakeServices(fail=RuntimeError("model exploded\nTraceback line two"))
    async with running(services, sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "complete", "id": 1, "prefix": "x"})
        assert await c.recv() == {"type": "error", "id": 1, "code": "internal", "message": "RuntimeError: model exploded"}
        await c.send({"type": "suggest", "id": 2, "buffer": "x"})
        assert (await c.recv())["code"] == "internal"
        await c.send({"type": "hello", "id": 3})
        assert (await c.recv())["type"] == "done"
    assert "Traceback" in caplog.text  # the traceback goes to the log, not to the client


async def test_unencodable_status_is_an_internal_error(sock_path):
    class Odd(FakeServices):
        def status(self):
            return {"x": object()}

    async with running(Odd(), sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "status", "id": 1})
        assert (await c.recv())["code"] == "internal"


# ---- back-pressure --------------------------------------------------------------------------------


async def test_a_client_that_never_reads_is_dropped_and_its_jobs_cancelled(sock_path):
    services = FakeServices(deltas=["z" * 65536] * 100_000)
    async with running(services, sock_path, send_timeout_s=0.5, send_queue=8) as server:
        async with Raw.connect(sock_path) as c:
            await c.send({"type": "complete", "id": 1, "prefix": "flood"})
            await wait_for(lambda: services.cancelled == ["flood"])
            # Bounded: the queue, the kernel's buffers, and nothing more were produced.
            assert services.sent < 200
            await wait_for(lambda: server.connections == 0)


async def test_fifty_concurrent_clients(sock_path):
    services = FakeServices(delay=0.001)
    results: dict[int, wire.DoneReply] = {}
    async with running(services, sock_path):
        async def one(i: int) -> None:
            async with socket_client.connect(sock_path, client=f"c{i}") as c:
                if i % 2:
                    results[i] = await c.complete(f"p{i}")
                else:
                    results[i] = await c.suggest(f"git ch{i}")

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
    assert len(results) == 50
    assert all(results[i].text == "def add(a, b)" for i in range(1, 50, 2))
    assert all(results[i].suggestions[0].text == f"git ch{i}eckout main" for i in range(0, 50, 2))


# ---- the socket file and its directory ------------------------------------------------------------


async def test_permissions_dir_0700_socket_0600(sock_path):
    async with running(FakeServices(), sock_path):
        assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    assert not sock_path.exists()  # a clean exit removes the socket file


async def test_default_directory_is_repaired_or_refused(sock_dir, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(sock_dir))
    monkeypatch.delenv("EXLSP_SOCKET", raising=False)
    path = resolve_socket_path()
    assert path == sock_dir / "exlsp" / "exlsp.sock"
    path.parent.mkdir(mode=0o755)
    os.chmod(path.parent, 0o755)
    async with running(FakeServices(), path):
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700  # too open: repaired
    os.chown(path.parent, 12345, 12345)  # someone else's (we run as root here, so we can fake it)
    with pytest.raises(SocketSetupError, match="belongs to uid 12345"):
        claim_socket(path)
    shutil.rmtree(path.parent)
    (sock_dir / "elsewhere").mkdir()
    path.parent.symlink_to(sock_dir / "elsewhere")
    with pytest.raises(SocketSetupError, match="not a directory"):
        claim_socket(path)


def test_path_resolution_order(sock_dir, monkeypatch):
    env = {"EXLSP_SOCKET": "/x/e.sock", "XDG_RUNTIME_DIR": str(sock_dir), "TMPDIR": "/var/tmp"}
    assert resolve_socket_path("/x/flag.sock", env) == Path("/x/flag.sock")
    assert resolve_socket_path(None, env) == Path("/x/e.sock")
    del env["EXLSP_SOCKET"]
    assert resolve_socket_path(None, env) == sock_dir / "exlsp" / "exlsp.sock"
    for bad in ("relative/dir", str(sock_dir / "missing")):
        env["XDG_RUNTIME_DIR"] = bad  # relative or missing: ignored, as the XDG spec says
        assert resolve_socket_path(None, env) == Path(f"/var/tmp/exlsp-{os.getuid()}/exlsp.sock")
    assert resolve_socket_path(None, {}) == Path(f"/tmp/exlsp-{os.getuid()}/exlsp.sock")


def test_too_long_path_is_a_clear_error(sock_dir):
    with pytest.raises(SocketSetupError, match="too long"):
        claim_socket(sock_dir / ("d" * 120) / "exlsp.sock")


async def test_stale_socket_is_replaced(sock_path):
    sock_path.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))
    dead.close()  # the file stays, nobody listens: what a crashed exlsp leaves
    assert sock_path.exists()
    async with running(FakeServices(), sock_path), Raw.connect(sock_path) as c:
        await c.send({"type": "hello", "id": 1})
        assert (await c.recv())["type"] == "done"


async def test_live_socket_is_never_stolen(sock_path):
    async with running(FakeServices(), sock_path):
        second = SocketServer(sock_path, FakeServices())
        with pytest.raises(SocketInUse, match=str(sock_path)):
            await second.serve()
        async with Raw.connect(sock_path) as c:  # the first one still serves
            await c.send({"type": "hello", "id": 1})
            assert (await c.recv())["type"] == "done"


def test_live_foreign_listener_is_never_stolen(sock_path):
    sock_path.parent.mkdir(mode=0o700)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(sock_path))
    other.listen(1)
    try:
        with pytest.raises(SocketInUse, match=str(sock_path)):
            claim_socket(sock_path)
        assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    finally:
        other.close()


def test_a_file_that_is_not_a_socket_is_left_alone(sock_path):
    sock_path.parent.mkdir(mode=0o700)
    sock_path.write_text("precious")
    with pytest.raises(SocketSetupError, match="not a socket"):
        claim_socket(sock_path)
    assert sock_path.read_text() == "precious"


# ---- peer credentials ------------------------------------------------------------------------------


def test_peer_check_function(monkeypatch):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert socket_server.peer_credentials(a)[1] == os.getuid()
        assert peer_allowed(a)
        monkeypatch.setattr(socket_server.os, "getuid", lambda: 12345)
        assert not peer_allowed(a)


async def test_another_uid_is_refused_without_an_answer(sock_path, monkeypatch):
    async with running(FakeServices(), sock_path) as server:
        monkeypatch.setattr(socket_server.os, "getuid", lambda: os.geteuid() + 12345)
        async with Raw.connect(sock_path) as c:
            await c.send({"type": "hello", "id": 1})
            assert await c.eof()
        assert server.refused == 1
        monkeypatch.undo()
        async with Raw.connect(sock_path) as c:
            await c.send({"type": "hello", "id": 1})
            assert (await c.recv())["type"] == "done"


# ---- the client ------------------------------------------------------------------------------------


async def test_client_says_plainly_when_nothing_listens(sock_path):
    message = f"no exlsp process is running (socket {sock_path})"
    with pytest.raises(socket_client.NoServer) as caught:
        async with socket_client.connect(sock_path):
            pass
    assert str(caught.value) == message
    with pytest.raises(socket_client.NoServer, match=message.replace("(", r"\(").replace(")", r"\)")):
        socket_client.Client(sock_path)


async def test_clients_raise_on_error_and_cancelled(sock_path):
    async with running(FakeServices(hang=True), sock_path):
        async with socket_client.connect(sock_path) as c:
            assert c.server is not None and c.server.version == __version__
            pending = await c.open(wire.ChatRequest, messages=[wire.ChatMessage("user", "x")])
            await pending.cancel()
            with pytest.raises(socket_client.RequestCancelled):
                await pending.result()
            await c.send_raw(b"nonsense\n")
            await wait_for(lambda: len(c.unrouted) == 1)
            assert c.unrouted[0].code == "parse_error"

        def blocking() -> None:
            with socket_client.Client(sock_path, timeout=5) as sync:
                assert sync.status()["model"] == "fake"
                with pytest.raises(socket_client.RequestFailed, match="invalid_request"):
                    sync.request(wire.CompleteRequest, prefix="x", max_tokens=0)

        await anyio.to_thread.run_sync(blocking)


async def test_blocking_client_streams(sock_path):
    async with running(FakeServices(), sock_path):
        def blocking() -> tuple[list[str], wire.DoneReply]:
            deltas: list[str] = []
            with socket_client.Client(sock_path) as c:
                done = c.chat("hello", on_delta=deltas.append)
            return deltas, done

        deltas, done = await anyio.to_thread.run_sync(blocking)
    assert deltas == ["def", " add", "(a, b)"] and done.text == "def add(a, b)"


# ---- fuzz: nothing a client sends takes the server down ---------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server():
    d = Path(tempfile.mkdtemp(prefix="exl-fz-", dir="/tmp"))
    path = d / "run" / "exlsp.sock"
    server = SocketServer(path, FakeServices(), max_line_bytes=2048)
    with anyio.from_thread.start_blocking_portal() as portal:
        future, _ = portal.start_task(server.serve)
        yield path, server
        future.cancel()
    shutil.rmtree(d, ignore_errors=True)


_json_ish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
_requestish = st.fixed_dictionaries(
    {"type": st.sampled_from([*wire.REQUEST_TYPES, "done", "", "x"]) | st.text(max_size=8)},
    optional={"id": _json_ish, "buffer": _json_ish, "prefix": _json_ish, "messages": _json_ish, "target": _json_ish,
              "max_tokens": _json_ish, "cursor": _json_ish},
).map(lambda d: json.dumps(d).encode())
_chunks = st.lists(
    st.one_of(st.binary(max_size=300), _requestish, _requestish.map(lambda b: b + b"\n"), st.just(b"x" * 3000),
              st.just(b"\n"), st.just(b'{"type":"hello","id":'), st.just(b"\r\n")),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_chunks)
def test_random_input_never_kills_the_server(fuzz_server, chunks):
    path, server = fuzz_server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(WAIT)
        s.connect(str(path))
        for chunk in chunks:
            s.sendall(chunk)
        # End whatever line is open, then ask something that must be answered.
        s.sendall(b'\n{"type":"hello","id":"probe"}\n')
        reader = s.makefile("rb")
        while True:
            line = reader.readline()
            assert line, "the server closed the connection"
            reply = wire.decode_reply(line)  # every line the server writes is a valid reply
            if reply.id == "probe" and isinstance(reply, wire.DoneReply):
                break
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # and a fresh connection works too
        s.settimeout(WAIT)
        s.connect(str(path))
        s.sendall(b'{"type":"hello","id":1}\n')
        assert json.loads(s.makefile("rb").readline())["protocol"] == 1


# ---- the real engine ----------------------------------------------------------------------------------


class RealServices:
    """A minimal real assistant: prompts straight to the engine, deltas straight to the socket."""

    def __init__(self, engine, *, stop_at_eos: bool = True) -> None:
        self.engine, self.stop_at_eos = engine, stop_at_eos

    async def _generate(self, prompt: str, max_tokens: int, on_delta, group: str, priority: Priority) -> Answer:
        request = GenerationRequest(prompt=prompt, max_tokens=max_tokens, lane_group=group, priority=priority,
                                    stop_at_eos=self.stop_at_eos)
        async with await self.engine.generate(request) as stream:
            async for event in stream:
                if isinstance(event, Delta) and on_delta is not None:
                    maybe = on_delta(event.text)
                    if maybe is not None:
                        await maybe
        final = stream.final
        return Answer(text=final.text, stats=final, stop_reason=final.stop_reason)

    async def complete(self, query, on_delta):
        return await self._generate(query.prefix, query.max_tokens, on_delta, "completion", Priority.INLINE)

    async def chat(self, query, on_delta):
        prompt = "\n".join(m.content for m in query.messages)
        return await self._generate(prompt, query.max_tokens, on_delta, "chat", Priority.CHAT)

    async def suggest(self, query):
        answer = await self._generate(query.buffer, 8, None, "shell", Priority.SHELL)
        line = (query.buffer + answer.text).splitlines()[0] if (query.buffer + answer.text).strip() else query.buffer
        answer.suggestions = [Suggestion(line)]
        return answer

    def status(self):
        return self.engine.status()


@pytest.mark.model
class TestRealEngine:
    async def test_streams_and_stats(self, real_engine, sock_path):
        async with running(RealServices(real_engine), sock_path):
            async with socket_client.connect(sock_path) as c:
                deltas: list[str] = []
                done = await c.complete("def fibonacci(n):\n    ", on_delta=deltas.append, max_tokens=16)
                status = await c.status()
                suggestion = await c.suggest("git ch")
        assert deltas and "".join(deltas) == done.text
        assert done.generated_tokens and done.prompt_tokens and done.total_ms and done.ttft_ms is not None
        assert status["backend"] == "llamacpp" and status["socket"]["connections"] == 1
        assert suggestion.suggestions and suggestion.suggestions[0].text.startswith("git ch")

    async def test_disconnect_cancels_the_generation(self, real_engine, sock_path):
        before = real_engine.stats.jobs_cancelled
        start = real_engine.stats.generated_tokens  # the session's engine counts every test's tokens
        async with running(RealServices(real_engine, stop_at_eos=False), sock_path):
            async with Raw.connect(sock_path) as c:
                await c.send({"type": "complete", "id": 1, "prefix": "1, 2, 3, 4, 5,", "max_tokens": 1000})
                assert (await c.recv())["type"] == "delta"
            await wait_for(lambda: real_engine.stats.jobs_cancelled == before + 1, timeout=30)
            await wait_for(lambda: real_engine.status()["running"] is None)
            generated = real_engine.stats.generated_tokens
            await anyio.sleep(0.3)
            assert real_engine.stats.generated_tokens == generated  # the token loop stopped
            assert generated - start < 1000

    async def test_cancel_message_stops_the_generation(self, real_engine, sock_path):
        before = real_engine.stats.jobs_cancelled
        async with running(RealServices(real_engine, stop_at_eos=False), sock_path), Raw.connect(sock_path) as c:
            await c.send({"type": "chat", "id": "c", "messages": [{"role": "user", "content": "Count: 1, 2, 3,"}],
                          "max_tokens": 1000})
            assert (await c.recv())["type"] == "delta"
            await c.send({"type": "cancel", "id": "x", "target": "c"})
            seen = await c.until_terminal("c", "x")
            assert seen["c"][-1] == {"type": "cancelled", "id": "c"}
            await wait_for(lambda: real_engine.stats.jobs_cancelled == before + 1, timeout=30)

    async def test_fifty_concurrent_clients(self, real_engine, sock_path):
        answered: list[int] = []
        t0 = time.perf_counter()
        async with running(RealServices(real_engine), sock_path):
            async def one(i: int) -> None:
                async with socket_client.connect(sock_path) as c:
                    done = await c.complete(f"# client {i}\ndef f{i}(x):\n    return", max_tokens=4)
                    assert done.generated_tokens is not None and done.generated_tokens >= 1
                    answered.append(i)

            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(one, i)
        assert sorted(answered) == list(range(50))
        assert time.perf_counter() - t0 < 120


@pytest.mark.model
async def test_describe_mode_gives_a_command_through_the_real_assistant(real_engine):
    """Ctrl-G in the shells: a description becomes a (never executed) command."""
    from exlsp.plugins.api import ShellQuery
    from exlsp.plugins.assistant import Assistant
    from exlsp.plugins.manager import PluginManager

    plugins = PluginManager(local_dirs=[])
    plugins.load()
    answer = await Assistant(real_engine, plugins).suggest(
        ShellQuery(buffer="list files sorted by size", shell="bash", mode="describe", candidates=1)
    )
    assert answer.suggestions and answer.suggestions[0].text.strip()
    assert "\n" not in answer.suggestions[0].text
    assert answer.suggestions[0].risk in ("low", "medium", "high")
