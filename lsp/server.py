"""The language server: the only place that registers pygls features. Handlers live in
``features/`` (one module per method) and are thin: LSP types in, assistant call, LSP types out."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import JsonRPCNotification

from exlsp import __version__
from exlsp.plugins.assistant import Assistant
from exlsp.plugins.chat_sessions import ChatSessions
from exlsp.plugins.manager import PluginManager
from exlsp.runtime import Engine

from exlsp.plugins.builtin.context import RING

from .config import Settings, parse_settings
from .documents import looks_binary, use_lsp_documents
from .features import chat, chat_sessions, commands, completion, inline_completion, status
from .features.inline_completion import CompletionCache, InflightTable

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    plugins: PluginManager
    file_settings: dict[str, Any] = field(default_factory=dict)
    init_options: dict[str, Any] | None = None
    settings: Settings = field(default_factory=Settings)
    engine: Engine | None = None
    assistant: Assistant | None = None
    load_error: str | None = None
    cache: CompletionCache = field(default_factory=CompletionCache)
    inflight: InflightTable = field(default_factory=InflightTable)
    counters: Counter[str] = field(default_factory=Counter)
    noted_documents: set[str] = field(default_factory=set)  # told the user once why: too big/binary
    sessions: ChatSessions | None = None  # the process's chat sessions (None: none are kept)
    _ready: asyncio.Event | None = None

    @property
    def ready(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    def set_assistant(self, assistant: Assistant | None, error: str | None = None) -> None:
        self.assistant = assistant
        self.engine = assistant.engine if assistant else None
        self.load_error = error
        self.ready.set()

    async def wait_ready(self, timeout: float | None) -> Assistant | None:
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        return self.assistant


class ExlspProtocol(LanguageServerProtocol):
    """pygls drops a request whose params do not fit the method's type without answering it,
    and the client waits forever; answer it with InvalidParams instead."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "id" not in data or "method" not in data:
                raise
            error = JsonRpcInvalidParams(f"invalid params for {data.get('method')}: {exc}")
            self._send_response(data["id"], error=error.to_response_error())
            # Handled: hand pygls a notification nobody listens to.
            return JsonRPCNotification(method="$/exlsp/answered", jsonrpc="2.0", params=None)


class ExlspServer(LanguageServer):
    def __init__(self, state: ServerState) -> None:
        super().__init__(name="exlsp", version=__version__, protocol_cls=ExlspProtocol)
        self.exlsp = state

    def apply_settings(self, *layers: Any) -> None:
        state = self.exlsp
        state.settings, warnings = parse_settings(state.file_settings, state.init_options, *layers)
        if state.settings.plugins:
            state.plugins.update_settings(state.settings.plugins)
        for warning in warnings:
            log.warning(warning)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=warning))


def remember_document(ls: ExlspServer, uri: str, cursor_line: int | None) -> None:
    """Feed the recent-buffers ring (context for completions in other files)."""
    doc = ls.workspace.get_text_document(uri)
    text = doc.source
    if len(text) > ls.exlsp.settings.completion.max_document_bytes or looks_binary(text):
        return
    try:
        RING.add(doc.path or uri, text, cursor_line)
    except Exception:  # context is a nicety: never fail document sync over it
        log.exception("could not add %s to the context ring", uri)


def build_server(state: ServerState) -> ExlspServer:
    server = ExlspServer(state)

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: ExlspServer, params: types.InitializeParams) -> None:
        use_lsp_documents(ls.workspace)  # LSP's line breaks, not str.splitlines' (docs/fuzzing.md)
        options = params.initialization_options
        ls.exlsp.init_options = options if isinstance(options, dict) else None
        if options is not None and not isinstance(options, dict):
            log.warning("initializationOptions must be an object; ignored")
        ls.exlsp.settings, ls._init_warnings = parse_settings(ls.exlsp.file_settings, ls.exlsp.init_options)

    @server.feature(types.INITIALIZED)
    def on_initialized(ls: ExlspServer, params: types.InitializedParams) -> None:
        for warning in getattr(ls, "_init_warnings", []):
            ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=warning))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def on_config(ls: ExlspServer, params: types.DidChangeConfigurationParams) -> None:
        settings = params.settings
        ls.apply_settings(settings if isinstance(settings, dict) else {})

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def on_open(ls: ExlspServer, params: types.DidOpenTextDocumentParams) -> None:
        remember_document(ls, params.text_document.uri, None)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def on_change(ls: ExlspServer, params: types.DidChangeTextDocumentParams) -> None:
        line = None
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                line = change.range.start.line
        remember_document(ls, params.text_document.uri, line)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def on_close(ls: ExlspServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.exlsp.cache.forget(params.text_document.uri)

    server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())(
        inline_completion.handle
    )
    server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[]))(
        completion.handle
    )
    server.feature(chat.METHOD)(chat.handle)
    server.feature(chat_sessions.LIST)(chat_sessions.handle_list)
    server.feature(chat_sessions.GET)(chat_sessions.handle_get)
    server.feature(chat_sessions.DELETE)(chat_sessions.handle_delete)
    server.feature(status.METHOD)(status.handle)
    server.command(commands.ACCEPT)(commands.accept)
    server.command(commands.RELOAD_PLUGINS)(commands.reload_plugins)
    server.command(commands.CLEAR_CACHE)(commands.clear_cache)
    return server
