"""One model per user: editors attach to the process that already owns it.

The owner (``exlsp daemon``, or the first ``exlsp serve``) listens on a second socket beside the
NDJSON one, ``lsp.sock`` (same directory, 0700/0600, same peer-uid check), that speaks plain LSP
frames: every connection gets its own language server (documents, caches, settings) on the shared
assistant and engine. A later ``exlsp serve`` for the same model finds it, relays its stdio to it
byte for byte, and never loads the model.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from exlsp.plugins.assistant import Assistant
from exlsp.plugins.chat_sessions import ChatSessions
from exlsp.plugins.manager import PluginManager
from exlsp.runtime import ExlspError

from .serve import run_lsp
from .server import ServerState, build_server
from .socket_client import Client, check_server
from .socket_server import claim, peer_allowed, serve_listener

log = logging.getLogger(__name__)


def lsp_socket_path(socket_path: Path) -> Path:
    return socket_path.with_name("lsp.sock")


class _StreamReader:
    """pygls' reader interface over an anyio byte stream."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            self._buf += await self._stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._eof = True
            return False
        return True

    async def readline(self) -> bytes:
        while (i := self._buf.find(b"\n")) < 0:
            if not await self._fill():
                data, self._buf = bytes(self._buf), bytearray()
                return data
        data = bytes(self._buf[: i + 1])
        del self._buf[: i + 1]
        return data

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill():
                return b""
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data


class _StreamWriter:
    """Writes in order from one task (an anyio stream refuses concurrent sends)."""

    def __init__(self, stream: anyio.abc.ByteStream, tg: anyio.abc.TaskGroup) -> None:
        self._send, receive = anyio.create_memory_object_stream[bytes](1024)
        self._stream = stream
        tg.start_soon(self._pump, receive)

    async def _pump(self, receive: Any) -> None:
        async with receive:
            async for data in receive:
                try:
                    await self._stream.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return

    def write(self, data: bytes) -> None:
        try:
            self._send.send_nowait(data)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.warning("an attached editor is not reading; dropping a message")

    def close(self) -> None:
        self._send.close()


class LspSocketServer:
    """Language servers for attached editors, on ``lsp.sock``."""

    def __init__(
        self, path: Path, assistant: Assistant, plugins: PluginManager, sessions: ChatSessions | None = None
    ) -> None:
        self.path = path
        self.assistant = assistant
        self.plugins = plugins
        self.sessions = sessions  # shared by every attached editor: one store per process
        self.clients = 0
        self.served = 0
        self.idle = anyio.Event()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[Path] = anyio.TASK_STATUS_IGNORED) -> None:
        claimed = await claim(self.path)
        try:
            async with anyio.create_task_group() as tg:
                # A removed lsp.sock is created again, as the NDJSON socket is (socket_server.py).
                await serve_listener(claimed, lambda stream: tg.start_soon(self._handle, stream), task_status=task_status)
        finally:
            claimed.release()

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if not peer_allowed(stream.extra(SocketAttribute.raw_socket)):
                log.warning("refused an LSP connection from another user on %s", self.path)
                return
            self.clients += 1
            self.served += 1
            self.idle = anyio.Event()
            state = ServerState(plugins=self.plugins, sessions=self.sessions)
            server = build_server(state)
            state.set_assistant(self.assistant)
            try:
                async with anyio.create_task_group() as tg:
                    writer = _StreamWriter(stream, tg)
                    await run_lsp(server, _StreamReader(stream), writer)
                    writer.close()
            except Exception:
                log.exception("attached LSP connection failed")
            finally:
                self.clients -= 1
                if self.clients == 0:
                    self.idle.set()


def find_owner(socket_path: Path, model_name: str) -> Path | None:
    """The LSP socket of a live owner serving ``model_name``, or None."""
    lsp_path = lsp_socket_path(socket_path)
    if not lsp_path.is_socket():
        return None
    try:
        with Client(socket_path, client="exlsp-serve", timeout=3) as client:
            status = client.status()
    except (ExlspError, OSError):
        return None
    return lsp_path if status.get("model") == model_name else None


def relay(lsp_path: Path, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Copy stdin to the owner and the owner's replies to stdout until either side ends. The
    owner must be our own user (``check_server``): the editor's documents go there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.fspath(lsp_path))
    try:
        check_server(sock, lsp_path)
    except ExlspError:
        sock.close()
        raise

    def upstream() -> None:
        try:
            while chunk := stdin.read1(65536) if hasattr(stdin, "read1") else stdin.read(65536):
                sock.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    threading.Thread(target=upstream, name="exlsp-relay-in", daemon=True).start()
    try:
        while chunk := sock.recv(65536):
            stdout.write(chunk)
            stdout.flush()
    except OSError:
        pass
    finally:
        sock.close()
    return 0


async def wait_for_attached(server: LspSocketServer | None, keep_alive_s: float) -> None:
    """The owner's own editor left: stay while attached editors remain, then ``keep_alive_s``."""
    if server is None:
        return
    while True:
        if server.clients:
            await server.idle.wait()
        await anyio.sleep(keep_alive_s)
        if not server.clients:
            return

