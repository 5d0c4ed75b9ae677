"""The language server in process (pygls client <-> exlsp server over pipes), real default model."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from exlsp.lsp.server import ServerState, build_server
from exlsp.plugins.assistant import Assistant
from exlsp.plugins.manager import PluginManager

from exlsp.lsp.inprocess import connect, initialize_params, inline_params, open_document

pytestmark = pytest.mark.model

CODE = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n'


def make_server(engine, **settings):
    manager = PluginManager(local_dirs=[], entry_points=True)
    manager.load()
    state = ServerState(plugins=manager, file_settings=settings)
    server = build_server(state)
    state.set_assistant(Assistant(engine, manager))
    return server


def change(client, uri: str, version: int, line: int, char: int, text: str) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=types.Position(line, char), end=types.Position(line, char)), text=text
                )
            ],
        )
    )


async def status(client) -> dict:
    return await client.request("exlsp/status", {})


async def test_capabilities_and_inline_completion(real_engine):
    server = make_server(real_engine)
    async with connect(server) as client:
        result = await client.initialize_async(initialize_params())
        caps = result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is not None
        assert set(caps.execute_command_provider.commands) >= {"exlsp.accept", "exlsp.reloadPlugins", "exlsp.clearCache"}
        assert caps.position_encoding == types.PositionEncodingKind.Utf16
        client.initialized(types.InitializedParams())
        await open_document(client, "file:///t/fib.py", CODE)
        got = await client.text_document_inline_completion_async(inline_params("file:///t/fib.py", 2, 8))
        items = got.items if isinstance(got, types.InlineCompletionList) else got
        assert items and items[0].insert_text.strip()
        assert items[0].range.start == types.Position(2, 8)
        assert items[0].command.command == "exlsp.accept"
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="exlsp.accept", arguments=items[0].command.arguments)
        )
        st = await status(client)
        assert st["accepted"] == 1 and st["requests"]["completions"] >= 1
        assert st["model"] == "SmolLM2-135M-Instruct.Q4_1" and st["model_loads"] >= 1


async def test_typing_through_a_suggestion_asks_no_model(real_engine):
    server = make_server(real_engine)
    uri = "file:///t/through.py"
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        await open_document(client, uri, CODE)
        first = await client.text_document_inline_completion_async(inline_params(uri, 2, 8))
        text = first.items[0].insert_text
        assert len(text) >= 2
        jobs = real_engine.stats.jobs_submitted
        change(client, uri, 2, 2, 8, text[0])
        await asyncio.sleep(0.05)
        again = await client.text_document_inline_completion_async(inline_params(uri, 2, 9))
        assert again.items[0].insert_text == text[1:]
        assert real_engine.stats.jobs_submitted == jobs
        assert (await status(client))["lsp"]["cache_hits"] >= 1


async def test_cancel_request_stops_generation(real_engine):
    server = make_server(real_engine, completion={"maxTokens": 250, "timeBudgetMs": 60000})
    uri = "file:///t/long.py"
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        await open_document(client, uri, "# A long list of numbers, one per line:\n")
        cancelled = real_engine.stats.jobs_cancelled
        fut = client.request("textDocument/inlineCompletion", inline_params(uri, 1, 0), msg_id="long-1")
        task = asyncio.ensure_future(fut)
        await asyncio.sleep(0.4)
        client.cancel("long-1")
        with pytest.raises(JsonRpcException):
            await task
        for _ in range(50):
            if real_engine.stats.jobs_cancelled > cancelled:
                break
            await asyncio.sleep(0.02)
        assert real_engine.stats.jobs_cancelled == cancelled + 1
        generated = real_engine.stats.generated_tokens
        await asyncio.sleep(0.3)
        assert real_engine.stats.generated_tokens == generated


async def test_newer_request_supersedes_older(real_engine):
    server = make_server(real_engine, completion={"maxTokens": 250, "timeBudgetMs": 60000})
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        for attempt in range(5):  # the model may end the first answer early: try another document
            uri = f"file:///t/super{attempt}.py"
            await open_document(client, uri, f"# numbers, attempt {attempt}:\n1\n")
            old = asyncio.ensure_future(client.request("textDocument/inlineCompletion", inline_params(uri, 2, 0)))
            await asyncio.sleep(0.3)
            if not old.done():
                break
        assert not old.done(), "every first answer ended within 0.3 s"
        change(client, uri, 2, 0, 0, "# squares\n")  # an edit above the cursor: not typing-through
        await asyncio.sleep(0.05)
        new = await client.text_document_inline_completion_async(inline_params(uri, 3, 0))
        with pytest.raises(JsonRpcException):
            await old
        assert isinstance(new, types.InlineCompletionList)
        st = await status(client)
        assert st["lsp"]["superseded"] >= 1


async def test_chat_streams_progress_and_returns_text(real_engine):
    server = make_server(real_engine)
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        params = {"messages": [{"role": "user", "content": "Say hello in one short sentence."}],
                  "workDoneToken": "chat-1", "maxTokens": 40}
        result = await client.request("exlsp/chat", params)
        await asyncio.sleep(0.05)
        values = client.progress["chat-1"]
        assert values[0]["title"] == "exlsp chat"
        assert values[0]["kind"] == "begin" and values[-1]["kind"] == "end"
        streamed = "".join(v["message"] for v in values[1:-1])
        assert result["text"] and streamed == result["text"]
        assert result["generatedTokens"] > 0


async def test_chat_cancel_and_invalid_params(real_engine):
    server = make_server(real_engine)
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        with pytest.raises(JsonRpcException) as bad:
            await client.request("exlsp/chat", {"messages": "not a list"})
        assert bad.value.code == -32602
        with pytest.raises(JsonRpcException):
            await client.request("exlsp/chat", {"messages": []})
        cancelled = real_engine.stats.jobs_cancelled
        params = {"messages": [{"role": "user", "content": "Write a long story about a cat."}],
                  "workDoneToken": "chat-2", "maxTokens": 400}
        task = asyncio.ensure_future(client.request("exlsp/chat", params, msg_id="chat-long"))
        await asyncio.sleep(0.5)
        client.cancel("chat-long")
        with pytest.raises(JsonRpcException):
            await task
        for _ in range(250):  # the owner thread notices at its next token
            if real_engine.stats.jobs_cancelled > cancelled:
                break
            await asyncio.sleep(0.02)
        assert real_engine.stats.jobs_cancelled == cancelled + 1
        assert client.progress["chat-2"][-1]["kind"] == "end"


async def test_bad_documents_and_positions(real_engine):
    server = make_server(real_engine)
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        unknown = await client.text_document_inline_completion_async(inline_params("file:///nope.py", 0, 0))
        assert unknown.items == ()
        await open_document(client, "file:///t/bin.dat", "\x00\x01\x02" * 1000, "plaintext")
        binary = await client.text_document_inline_completion_async(inline_params("file:///t/bin.dat", 0, 3))
        assert binary.items == ()
        await open_document(client, "file:///t/short.py", "x = 1\n")
        past = await client.text_document_inline_completion_async(inline_params("file:///t/short.py", 40, 99))
        assert isinstance(past, types.InlineCompletionList)
        big = "def f():\n    return 1\n" * 500_000  # ~11 MB
        await open_document(client, "file:///t/big.py", big)
        huge = await client.text_document_inline_completion_async(inline_params("file:///t/big.py", 10, 0))
        assert huge.items == ()
        await client.text_document_inline_completion_async(inline_params("file:///t/big.py", 11, 0))
        await asyncio.sleep(0.05)
        notes = [m.message for m in client.messages if "big.py" in m.message]
        assert len(notes) == 1 and "larger than 8 MB" in notes[0]  # once, not per keystroke
        assert any("bin.dat" in m.message and "binary" in m.message for m in client.messages)
        st = await status(client)  # still alive and answering
        assert st["ready"] is True


async def test_automatic_trigger_mid_word_is_skipped(real_engine):
    server = make_server(real_engine)
    uri = "file:///t/mid.py"
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        await open_document(client, uri, "result = compute_value(x)\n")
        jobs = real_engine.stats.jobs_submitted
        got = await client.text_document_inline_completion_async(inline_params(uri, 0, 12, invoked=False))
        assert got.items == () and real_engine.stats.jobs_submitted == jobs


async def test_invalid_settings_warn_and_fall_back(real_engine):
    server = make_server(real_engine)
    async with connect(server) as client:
        await client.initialize_async(initialize_params(completion={"maxTokens": "lots"}))
        client.initialized(types.InitializedParams())
        await asyncio.sleep(0.1)
        assert any("completion.maxTokens" in m.message for m in client.messages)
        assert server.exlsp.settings.completion.max_tokens == 64
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"exlsp": {"completion": {"enabled": False}}})
        )
        await asyncio.sleep(0.05)
        await open_document(client, "file:///t/off.py", CODE)
        off = await client.text_document_inline_completion_async(inline_params("file:///t/off.py", 2, 8))
        assert off.items == ()


async def test_completion_fallback_only_for_clients_without_inline(real_engine):
    server = make_server(real_engine)
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        await open_document(client, "file:///t/fb.py", CODE)
        params = types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri="file:///t/fb.py"), position=types.Position(2, 8)
        )
        got = await client.text_document_completion_async(params)
        assert got.items == ()
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"completion": {"fallback": "on"}})
        )
        await asyncio.sleep(0.05)
        got = await client.text_document_completion_async(params)
        assert got.items and got.items[0].insert_text.strip()
        item = got.items[0]  # the cursor is after "if n": the edit replaces the word "n" with "n..."
        assert item.text_edit.range.start == types.Position(2, 7) and item.text_edit.new_text.startswith("n")
        assert item.filter_text == item.text_edit.new_text


async def test_model_load_shows_work_done_progress(default_model_path):
    from exlsp.lsp.serve import load_into
    from exlsp.runtime import BackendConfig, resolve_model

    manager = PluginManager(local_dirs=[])
    manager.load()
    state = ServerState(plugins=manager)
    server = build_server(state)
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        client.initialized(types.InitializedParams())
        await load_into(server, resolve_model(default_model_path), BackendConfig(n_lanes=1, n_ctx=512),
                        {"completion": 1})
        await asyncio.sleep(0.1)
        assert client.created_tokens == ["exlsp/load"]
        values = client.progress["exlsp/load"]
        assert values[0]["kind"] == "begin" and "loading" in values[0]["title"]
        assert values[-1] == {"kind": "end", "message": "ready"}
        st = await status(client)
        assert st["ready"] and st["n_ctx"] == 512
        state.engine.close()


async def test_load_failure_is_shown_and_server_stays_up(tmp_path):
    from exlsp.lsp.serve import load_into
    from exlsp.runtime import BackendConfig, ModelSpec

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    manager = PluginManager(local_dirs=[])
    manager.load()
    server = build_server(ServerState(plugins=manager))
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        await load_into(server, ModelSpec(broken, "llamacpp"), BackendConfig(n_lanes=1, n_ctx=256), {"completion": 1})
        await asyncio.sleep(0.1)
        assert any("broken.gguf" in m.message and m.type == types.MessageType.Error for m in client.messages)
        st = await status(client)
        assert st["ready"] is False and "broken.gguf" in st["loadError"]
        with pytest.raises(JsonRpcException):
            await client.request("exlsp/chat", {"messages": [{"role": "user", "content": "hi"}]})


async def test_chat_while_the_model_loads_waits_visibly(real_engine):
    manager = PluginManager(local_dirs=[])
    manager.load()
    state = ServerState(plugins=manager)
    server = build_server(state)
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        params = {"messages": [{"role": "user", "content": "Hi"}], "workDoneToken": "early", "maxTokens": 8}
        task = asyncio.ensure_future(client.request("exlsp/chat", params))
        await asyncio.sleep(0.2)
        assert not task.done()
        assert client.progress["early"][0]["title"] == "exlsp chat (waiting for the model to load)"
        state.set_assistant(Assistant(real_engine, manager))  # the load finishes
        result = await task
        assert result["text"] and client.progress["early"][-1]["kind"] == "end"


async def _cancel_then_type(real_engine, attempt: int, pick) -> tuple[dict, object, str, str]:
    """Ask at the end of a line, cancel once the generation has streamed a few characters (as an
    editor does when a key is pressed), type ``pick(partial)``, ask again. Returns counters."""
    server = make_server(real_engine, completion={"maxTokens": 48, "timeBudgetMs": 60000})
    uri = f"file:///t/grace{attempt}-{id(pick)}.py"
    state = server.exlsp
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        await open_document(client, uri, "# the numbers from 1 to 40, one per line\nvalues = [\n    1,\n    2,\n    ")
        fut = asyncio.ensure_future(client.request("textDocument/inlineCompletion", inline_params(uri, 4, 4), msg_id=f"g{attempt}"))
        for _ in range(500):
            entry = state.inflight._by_uri.get(uri)
            if entry is not None and len(entry.partial) >= 2:
                break
            await asyncio.sleep(0.005)
        partial = entry.partial
        before = {"cancelled": real_engine.stats.jobs_cancelled, "superseded": real_engine.stats.jobs_superseded,
                  "attached": state.inflight.attached, "lsp_superseded": state.inflight.superseded}
        client.cancel(f"g{attempt}")
        await asyncio.sleep(0.03)  # the editor handles the key: the new request comes a little later
        typed = pick(partial)
        change(client, uri, 2, 4, 4, typed)
        new = await client.text_document_inline_completion_async(inline_params(uri, 4, 4 + len(typed)))
        with pytest.raises(JsonRpcException):
            await fut
        after = {"cancelled": real_engine.stats.jobs_cancelled, "superseded": real_engine.stats.jobs_superseded,
                 "attached": state.inflight.attached, "lsp_superseded": state.inflight.superseded}
        return {k: after[k] - before[k] for k in after}, new, partial, typed


async def test_a_cancel_followed_by_the_next_keystroke_keeps_the_generation(real_engine):
    """Editors cancel the open request before sending the next key's: when the typed key agrees with
    what the generation has streamed, the new request adopts it (no restart, no cancelled job)."""
    delta, new, partial, typed = await _cancel_then_type(real_engine, 0, lambda p: p[0])
    assert delta["attached"] == 1 and delta["cancelled"] == 0 and delta["superseded"] == 0, (delta, partial)
    assert new.items and partial.startswith(typed)
    assert (typed + new.items[0].insert_text).startswith(partial[:2])  # the same generation, continued


async def test_a_key_that_disagrees_with_the_generation_restarts_it(real_engine):
    delta, new, partial, typed = await _cancel_then_type(real_engine, 1, lambda p: "#" if p[0] != "#" else "@")
    assert delta["attached"] == 0 and delta["lsp_superseded"] == 1, (delta, partial)
    assert delta["cancelled"] + delta["superseded"] == 1  # the old generation stopped
