"""The HTTP API through the real client libraries (`openai`, `ollama`) against a real server.

`serve_http` runs on 127.0.0.1:0 in a task group opened inside each test; the clients talk to it over
TCP exactly as Continue, Open WebUI and friends would.
"""

from __future__ import annotations

import contextlib
import functools
from typing import AsyncIterator

import anyio
import pytest

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

from exlsp.lsp.http_api import make_app, serve_http  # noqa: E402
from exlsp.plugins.assistant import Assistant  # noqa: E402
from exlsp.plugins.manager import PluginManager  # noqa: E402

pytestmark = pytest.mark.model

HI = [{"role": "user", "content": "Say hello."}]
COUNT = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]


@pytest.fixture
def assistant(real_engine):
    manager = PluginManager(local_dirs=[], entry_points=True)
    manager.load()
    return Assistant(real_engine, manager)


@contextlib.asynccontextmanager
async def serving(assistant) -> AsyncIterator[int]:
    """A real uvicorn server on an ephemeral loopback port, stopped on exit."""
    app = make_app(assistant, token=None, max_body_bytes=1_000_000)
    async with anyio.create_task_group() as tg:
        port = await tg.start(functools.partial(serve_http, app, "127.0.0.1", 0, token=None))
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


def oa_client(port: int):
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)


def ol_client(port: int):
    return ollama.AsyncClient(host=f"http://127.0.0.1:{port}", timeout=60)


async def wait_for(predicate, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


# ---- OpenAI ------------------------------------------------------------------------------------------


async def test_openai_models_chat_and_stream(assistant):
    async with serving(assistant) as port:
        client = oa_client(port)
        try:
            models = await client.models.list()
            assert [m.id for m in models.data] == [assistant.model.name]

            params = dict(model="exlsp", messages=HI, max_tokens=16, temperature=0, seed=0)
            whole = await client.chat.completions.create(**params)
            text = whole.choices[0].message.content
            assert whole.choices[0].message.role == "assistant" and text
            assert whole.choices[0].finish_reason in ("stop", "length")
            assert 0 < whole.usage.completion_tokens <= 16

            stream = await client.chat.completions.create(**params, stream=True,
                                                          stream_options={"include_usage": True})
            pieces, finishes, usage = [], [], None
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    pieces.append(choice.delta.content or "")
                    if choice.finish_reason:
                        finishes.append(choice.finish_reason)
            assert "".join(pieces) == text
            assert finishes == [whole.choices[0].finish_reason]
            assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
        finally:
            await client.close()


async def test_openai_completions_with_suffix(assistant):
    async with serving(assistant) as port:
        client = oa_client(port)
        try:
            before = assistant.counters.completions
            r = await client.completions.create(model="exlsp", prompt="def add(a, b):\n    return ",
                                                suffix="\n", max_tokens=12)
            assert r.object == "text_completion" and isinstance(r.choices[0].text, str)
            assert r.usage.prompt_tokens > 0
            assert assistant.counters.completions == before + 1
        finally:
            await client.close()


async def test_openai_errors(assistant):
    async with serving(assistant) as port:
        client = oa_client(port)
        try:
            with pytest.raises(openai.NotFoundError) as nf:
                await client.chat.completions.create(model="gpt-4", messages=HI, max_tokens=4)
            assert nf.value.status_code == 404
            with pytest.raises(openai.BadRequestError) as br:
                await client.chat.completions.create(model="exlsp", messages=HI, max_tokens=10**6)
            assert br.value.status_code == 400
        finally:
            await client.close()


async def test_openai_disconnect_cancels(assistant, real_engine):
    async with serving(assistant) as port:
        client = oa_client(port)
        try:
            before = real_engine.stats.jobs_cancelled
            stream = await client.chat.completions.create(model="exlsp", messages=COUNT, max_tokens=1000,
                                                          stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            await stream.close()
            await wait_for(lambda: real_engine.stats.jobs_cancelled >= before + 1)
            await wait_for(lambda: real_engine.status()["running"] is None)
        finally:
            await client.close()


# ---- Ollama ------------------------------------------------------------------------------------------


async def test_ollama_list_chat_and_stream(assistant):
    async with serving(assistant) as port:
        client = ol_client(port)
        listed = await client.list()
        assert [m.model for m in listed.models] == [f"{assistant.model.name}:latest"]

        options = {"num_predict": 16, "temperature": 0, "seed": 0}
        whole = await client.chat(model="exlsp", messages=HI, options=options)
        text = whole.message.content
        assert whole.done and whole.message.role == "assistant" and text
        assert whole.eval_count and whole.eval_count <= 16

        pieces, last = [], None
        async for part in await client.chat(model="exlsp", messages=HI, options=options, stream=True):
            pieces.append(part.message.content or "")
            last = part
        assert "".join(pieces) == text
        assert last is not None and last.done and last.eval_count == whole.eval_count


async def test_ollama_generate_with_suffix(assistant):
    async with serving(assistant) as port:
        client = ol_client(port)
        before = assistant.counters.completions
        r = await client.generate(model="exlsp", prompt="def add(a, b):\n    return ", suffix="\n",
                                  options={"num_predict": 8})
        assert r.done and isinstance(r.response, str)
        assert assistant.counters.completions == before + 1


async def test_ollama_errors(assistant):
    async with serving(assistant) as port:
        client = ol_client(port)
        with pytest.raises(ollama.ResponseError) as nf:
            await client.chat(model="llama3:8b", messages=HI, options={"num_predict": 4})
        assert nf.value.status_code == 404
        with pytest.raises(ollama.ResponseError) as nf:
            await client.generate(model="llama3", prompt="x")
        assert nf.value.status_code == 404
        with pytest.raises(ollama.ResponseError) as br:
            await client.generate(model="exlsp", prompt="x", options={"num_predict": 10**6})
        assert br.value.status_code == 400


async def test_ollama_disconnect_cancels(assistant, real_engine):
    async with serving(assistant) as port:
        client = ol_client(port)
        before = real_engine.stats.jobs_cancelled
        parts = await client.chat(model="exlsp", messages=COUNT, options={"num_predict": 1000}, stream=True)
        async for part in parts:
            if part.message.content:
                break
        await parts.aclose()  # leaves the httpx stream: the connection closes
        await wait_for(lambda: real_engine.stats.jobs_cancelled >= before + 1)
        await wait_for(lambda: real_engine.status()["running"] is None)
