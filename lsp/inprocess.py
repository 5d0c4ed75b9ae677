"""An in-process LSP client <-> exlsp server pair over OS pipes, as an editor would talk to a
subprocess: used by the tests and by `exlsp bench lsp`. Open it inside the test (not across a
fixture's yield)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import defaultdict
from typing import Any, AsyncIterator

from lsprotocol import types
from pygls.io_ import run_async
from pygls.lsp.client import LanguageClient

from exlsp.lsp.features.params import raw_params
from exlsp.lsp.serve import run_lsp
from exlsp.lsp.server import ExlspServer


class _PipeWriter:
    """A non-blocking writer: client and server share one event loop here, so a blocking write
    of a large message would wait forever for a reader that cannot run."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def close(self) -> None:
        self._transport.close()


async def _pipe_writer(fd: int) -> _PipeWriter:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(fd, "wb", buffering=0))
    return _PipeWriter(transport)


async def _pipe_reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    return reader


class Client(LanguageClient):
    def __init__(self) -> None:
        super().__init__("exlsp-test-client", "1")
        self.messages: list[types.ShowMessageParams] = []
        self.progress: dict[Any, list[Any]] = defaultdict(list)
        self.created_tokens: list[Any] = []

        @self.feature(types.WINDOW_SHOW_MESSAGE)
        def _show(params: types.ShowMessageParams) -> None:
            self.messages.append(params)

        @self.feature(types.PROGRESS)
        def _progress(params: types.ProgressParams) -> None:
            self.progress[params.token].append(params.value)

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def _create(params: types.WorkDoneProgressCreateParams) -> None:
            self.created_tokens.append(params.token)

    async def request(self, method: str, params: Any, msg_id: Any = None) -> Any:
        """A request whose result comes back as plain JSON values (pygls makes namedtuples)."""
        result = await asyncio.wrap_future(self.protocol.send_request(method, params, msg_id=msg_id))
        return raw_params(result)

    def cancel(self, msg_id: Any) -> None:
        self.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))


@contextlib.asynccontextmanager
async def connect(server: ExlspServer) -> AsyncIterator[Client]:
    c2s_r, c2s_w = os.pipe()
    s2c_r, s2c_w = os.pipe()
    server_task = asyncio.ensure_future(
        run_lsp(server, await _pipe_reader(c2s_r), await _pipe_writer(s2c_w))
    )
    client = Client()
    client.protocol.set_writer(await _pipe_writer(c2s_w))
    client_task = asyncio.ensure_future(
        run_async(stop_event=threading.Event(), reader=await _pipe_reader(s2c_r), protocol=client.protocol)
    )
    try:
        yield client
    finally:
        for task in (client_task, server_task):
            task.cancel()
        await asyncio.gather(client_task, server_task, return_exceptions=True)


def initialize_params(**options: Any) -> types.InitializeParams:
    return types.InitializeParams(
        process_id=os.getpid(),
        root_uri=None,
        capabilities=types.ClientCapabilities(
            window=types.WindowClientCapabilities(work_done_progress=True),
            text_document=types.TextDocumentClientCapabilities(
                inline_completion=types.InlineCompletionClientCapabilities(),
            ),
            general=types.GeneralClientCapabilities(position_encodings=[types.PositionEncodingKind.Utf16]),
        ),
        initialization_options=options or None,
    )


async def open_document(client: Client, uri: str, text: str, language: str = "python") -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)
        )
    )
    await asyncio.sleep(0.05)


def inline_params(uri: str, line: int, character: int, invoked: bool = True) -> types.InlineCompletionParams:
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=kind),
    )
