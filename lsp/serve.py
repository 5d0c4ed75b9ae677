"""`exlsp serve`: the language server on stdio, the Unix socket and the plugin watcher in one
anyio task group, around one resident model.

stdout carries nothing but protocol: the protocol writes to a private duplicate of fd 1, and fd 1
itself is pointed at stderr before anything loads — so whatever llama.cpp, exllamav2 or a plugin
prints lands on stderr, even from C code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sys
import threading
from typing import Any, BinaryIO, Callable

import anyio
from lsprotocol import types
from pygls.io_ import StdoutWriter, run_async

from exlsp.plugins.assistant import Assistant
from exlsp.plugins.chat_sessions import ChatSessions
from exlsp.plugins.manager import PluginManager
from exlsp.runtime import BackendConfig, ExlspError, ModelSpec, load_engine

from .server import ExlspServer, ServerState, build_server

log = logging.getLogger(__name__)


class _OneLineProtocolErrors(logging.Filter):
    """pygls logs a full traceback for every malformed message a client sends; one line is
    enough for the user, and keeps a misbehaving client from flooding the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("pygls", __name__)):
            return True
        if record.exc_info:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        elif "Traceback (most recent call last)" in (message := record.getMessage()):
            record.msg = message.split("\n", 1)[0]  # pygls formats some tracebacks into the text
            record.args = ()
        return True


def quiet_protocol_tracebacks() -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OneLineProtocolErrors())


def protect_stdout() -> BinaryIO:
    """Return a private stream to the real stdout and send fd 1 (and sys.stdout) to stderr."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


class ThreadedReader:
    """pygls' reader interface over a blocking stream, read by one daemon thread (a pool thread
    blocked on stdin would keep the process alive after ``exit``)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._jobs: queue.SimpleQueue[tuple[Callable[..., bytes], tuple[Any, ...], asyncio.Future[bytes], Any]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._work, name="exlsp-stdin", daemon=True).start()

    def _work(self) -> None:
        while True:
            fn, args, fut, loop = self._jobs.get()
            try:
                result = fn(*args)
            except Exception:  # a closed stream reads as end of input
                result = b""
            try:
                loop.call_soon_threadsafe(lambda f=fut, r=result: f.done() or f.set_result(r))
            except RuntimeError:
                return

    def _call(self, fn: Callable[..., bytes], *args: Any) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        self._jobs.put((fn, args, fut, loop))
        return fut

    def readline(self) -> asyncio.Future[bytes]:
        return self._call(self._stream.readline)

    def readexactly(self, n: int) -> asyncio.Future[bytes]:
        return self._call(self._stream.read, n)


async def run_lsp(server: ExlspServer, reader: Any, writer: Any) -> int:
    """Run the protocol until the input ends or the client sends ``exit``; the exit code. Requests
    still running then are cancelled (their generations with them): nobody is left to answer."""
    server.protocol.set_writer(writer)
    stop = threading.Event()
    try:
        await run_async(stop_event=stop, reader=reader, protocol=server.protocol, logger=log)
    except SystemExit as exc:  # pygls' exit handler calls sys.exit
        return int(exc.code or 0)
    finally:
        _cancel_requests(server)
    return 0 if server.protocol._shutdown else 1


def _cancel_requests(server: ExlspServer) -> None:
    """pygls cancels in-flight requests on ``shutdown`` only; an editor that exits or closes the
    pipe mid-request (a streaming chat) would otherwise keep the model busy for nobody."""
    for future in list(server.protocol._request_futures.values()):
        if not future.done():
            future.cancel()


async def report_load_progress(server: ExlspServer, fraction: Callable[[], float], label: str) -> None:
    """Work-done progress for the model load, once the client is initialized (if it wants it)."""
    state = server.exlsp
    while server.protocol._workspace is None:  # not initialized yet
        if state.ready.is_set():
            return
        await asyncio.sleep(0.05)
    caps = server.client_capabilities.window
    if state.ready.is_set() or caps is None or not caps.work_done_progress:
        return
    token = "exlsp/load"
    try:
        await asyncio.wait_for(server.work_done_progress.create_async(token), 5)
    except Exception:
        return
    progress = server.work_done_progress
    progress.begin(token, types.WorkDoneProgressBegin(title=f"exlsp: loading {label}", percentage=0))
    last = -1
    while not state.ready.is_set():
        pct = int(fraction() * 100)
        if pct != last:
            progress.report(token, types.WorkDoneProgressReport(percentage=pct))
            last = pct
        await asyncio.sleep(0.1)
    message = "ready" if state.assistant else f"failed: {state.load_error}"
    progress.end(token, types.WorkDoneProgressEnd(message=message))


async def load_into(
    server: ExlspServer,
    spec: ModelSpec,
    config: BackendConfig,
    lane_groups: dict[str, int],
    on_loaded: Callable[[Assistant], Any] | None = None,
) -> None:
    state = server.exlsp
    done = [0.0]
    progress_task = asyncio.ensure_future(report_load_progress(server, lambda: done[0], spec.name))

    def progress(fraction: float) -> None:
        done[0] = fraction

    try:
        engine = await anyio.to_thread.run_sync(
            lambda: load_engine(spec, config, lane_groups=lane_groups, progress=progress)
        )
    except ExlspError as exc:
        state.set_assistant(None, str(exc))
        server.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=f"exlsp: {exc}"))
        await progress_task
        return
    assistant = Assistant(engine, state.plugins)
    state.set_assistant(assistant)
    await progress_task
    if on_loaded is not None:
        result = on_loaded(assistant)
        if asyncio.iscoroutine(result):
            await result


def make_state(
    plugins: PluginManager, file_settings: dict[str, Any] | None = None, sessions: ChatSessions | None = None
) -> ServerState:
    return ServerState(plugins=plugins, file_settings=dict(file_settings or {}), sessions=sessions)


async def serve_stdio(
    spec: ModelSpec,
    config: BackendConfig,
    lane_groups: dict[str, int],
    plugins: PluginManager,
    *,
    proto_out: BinaryIO,
    stdin: BinaryIO,
    file_settings: dict[str, Any] | None = None,
    owner_factory: Callable[[Assistant], Any] | None = None,
    keep_alive_s: float = 5.0,
    sessions: ChatSessions | None = None,
) -> int:
    """Serve one editor on stdio; with ``owner_factory`` also own the sockets (see owner.py) and,
    when this editor leaves, linger while editors attached through the LSP socket remain."""
    server = build_server(make_state(plugins, file_settings, sessions))
    code = 1
    owners: list[Any] = []
    async with anyio.create_task_group() as tg:

        def loaded(assistant: Assistant) -> None:
            if owner_factory is not None:
                owner = owner_factory(assistant)
                owners.append(owner)
                tg.start_soon(owner.start, tg)

        tg.start_soon(load_into, server, spec, config, lane_groups, loaded)
        code = await run_lsp(server, ThreadedReader(stdin), StdoutWriter(proto_out))
        for owner in owners:
            await owner.linger(keep_alive_s)
        tg.cancel_scope.cancel()
    if server.exlsp.engine is not None:
        server.exlsp.engine.close()
    return code
