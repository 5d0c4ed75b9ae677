"""The two front doors on the GPU backend, end to end: the language server's
``textDocument/inlineCompletion`` (an in-process pygls client over pipes) and the Unix socket's
``suggest`` and ``complete`` (an in-process socket server and the Python socket client)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import anyio
import pytest
from lsprotocol import types

from exlsp.lsp import socket_client
from exlsp.lsp.inprocess import connect, initialize_params, inline_params, open_document
from exlsp.lsp.server import ServerState, build_server
from exlsp.lsp.socket_server import SocketServer
from exlsp.plugins import shell_risk
from exlsp.plugins.assistant import Assistant
from exlsp.plugins.manager import PluginManager

pytestmark = pytest.mark.gpu

CODE = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n'


def assistant_for(engine) -> Assistant:
    manager = PluginManager(local_dirs=[], entry_points=True)
    manager.load()
    return Assistant(engine, manager)


async def test_lsp_inline_completion(engine, arch, gpu):
    assistant = assistant_for(engine)
    state = ServerState(plugins=assistant.plugins, file_settings={"completion": {"maxTokens": 12}})
    server = build_server(state)
    state.set_assistant(assistant)
    async with connect(server) as client:
        result = await client.initialize_async(initialize_params())
        assert result.capabilities.inline_completion_provider is not None
        client.initialized(types.InitializedParams())
        await open_document(client, "file:///t/fib.py", CODE)
        got = await client.text_document_inline_completion_async(inline_params("file:///t/fib.py", 2, 8))
        items = got.items if isinstance(got, types.InlineCompletionList) else got
        assert items and items[0].insert_text.strip(), "no completion"
        assert items[0].range.start == types.Position(2, 8)
        final = assistant.last_completion
        assert final is not None and final.error is None
        assert final.generated_tokens >= 1 and final.stop_reason in ("length", "stop", "time")
        if arch == "qwen2":  # a FIM prompt: <|fim_prefix|> ... <|fim_suffix|> ... <|fim_middle|>
            assert final.prompt_tokens > len(engine.tokenizer.encode(CODE, special=False))
        st = await client.request("exlsp/status", {})
        assert st["backend"] == gpu.backend and st["model"] == f"test-{arch}"
        assert st["requests"]["completions"] >= 1


async def test_socket_suggest_and_complete(engine, gpu):
    assistant = assistant_for(engine)
    folder = Path(tempfile.mkdtemp(prefix="exl-", dir="/tmp"))  # AF_UNIX paths hold ~104 bytes
    path = folder / "run" / "exlsp.sock"
    server = SocketServer(path, assistant)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            try:
                async with socket_client.connect(path, client="gpu-test") as client:
                    suggested = await client.suggest("git ch", shell="zsh", cwd="/tmp", history=["ls -la"])
                    assert suggested.suggestions, "no suggestion"
                    for s in suggested.suggestions:
                        assert s.text.startswith("git ch") and "\n" not in s.text
                        assert s.risk in shell_risk.LEVELS
                    deltas: list[str] = []
                    done = await client.complete(
                        "def fibonacci(n):\n    ", language="python", max_tokens=12, on_delta=deltas.append
                    )
                    assert done.text and done.generated_tokens and done.generated_tokens >= 1
                    assert deltas and done.total_ms and done.total_ms > 0
                    status = await client.status()
                    assert status["backend"] == gpu.backend and status["socket"]["connections"] == 1
            finally:
                tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
