"""What the process that owns the model runs besides its front door: the Unix socket server, the
LSP socket editors attach to, and the plugin watcher, in the caller's task group. Used by
`exlsp daemon` and `exlsp serve`."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import anyio.abc

from exlsp.plugins.assistant import Assistant
from exlsp.plugins.chat_sessions import ChatSessions
from exlsp.plugins.manager import PluginManager
from exlsp.plugins.reload import watch_plugins

from .attach import LspSocketServer, lsp_socket_path, wait_for_attached
from .socket_paths import ClaimedSocket, SocketSetupError
from .socket_server import SocketServer

log = logging.getLogger(__name__)


class Owner:
    def __init__(
        self,
        assistant: Assistant,
        plugins: PluginManager,
        socket_path: Path,
        sessions: ChatSessions | None = None,
        claimed: ClaimedSocket | None = None,
    ) -> None:
        self.assistant = assistant
        self.plugins = plugins
        self.socket_path = socket_path
        self.sessions = sessions  # the process's one chat store, shared by both sockets
        self.claimed = claimed  # the socket, when the caller claimed it before loading the model
        self.socket: SocketServer | None = None
        self.socket_error: str | None = None
        self.lsp: LspSocketServer | None = None

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the plugin watcher and the socket; a socket that cannot be had is reported,
        not fatal (the LSP client must keep working)."""
        await tg.start(watch_plugins, self.plugins)
        server = SocketServer(self.socket_path, self.assistant, sessions=self.sessions, claimed=self.claimed)
        try:
            await tg.start(server.serve)
        except* SocketSetupError as group:
            self.socket_error = str(group.exceptions[0])
            log.warning("exlsp: no Unix socket: %s", self.socket_error)
        if self.socket_error is not None:
            return
        self.socket = server
        lsp = LspSocketServer(lsp_socket_path(self.socket_path), self.assistant, self.plugins, sessions=self.sessions)
        try:
            await tg.start(lsp.serve)
            self.lsp = lsp
        except* SocketSetupError as group:
            log.warning("exlsp: editors cannot attach: %s", group.exceptions[0])

    async def linger(self, keep_alive_s: float) -> None:
        """Called when the owner's own client is gone: serve attached editors until they leave."""
        await wait_for_attached(self.lsp, keep_alive_s)
