"""The HTTP front door (OpenAI and Ollama dialects) on the real default model."""

from __future__ import annotations

import functools
import json

import anyio
import httpx
import pytest

from exlsp.lsp.http_api import check_bind, make_app, serve_http
from exlsp.plugins.assistant import Assistant
from exlsp.plugins.manager import PluginManager
from exlsp.runtime import ExlspError

pytestmark = pytest.mark.model

HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def assistant(real_engine):
    manager = PluginManager(local_dirs=[], entry_points=True)
    manager.load()
    return Assistant(real_engine, manager)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60)


@pytest.fixture
async def client(assistant):
    async with client_for(make_app(assistant, token=None, max_body_bytes=10_000)) as c:
        yield c


def sse_events(text: str) -> list[str]:
    return [block[len("data: "):] for block in text.split("\n\n") if block.startswith("data: ")]


async def wait_for(predicate, timeout: float = 30) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


# ---- OpenAI ------------------------------------------------------------------------------------------


async def test_models(client, assistant):
    r = await client.get("/v1/models")
    assert r.status_code == 200
    assert r.json()["data"][0]["id"] == assistant.model.name


async def test_chat_completion(client, assistant):
    r = await client.post("/v1/chat/completions", json={"model": assistant.model.name, "messages": HI,
                                                         "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "seed": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    u = body["usage"]
    assert 0 < u["completion_tokens"] <= 8 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert "exlsp_reused_tokens" in u


async def test_chat_seed_is_reproducible_and_stop_is_honoured(client):
    req = {"model": "exlsp", "messages": HI, "max_tokens": 12, "temperature": 1.0, "seed": 42}
    a = (await client.post("/v1/chat/completions", json=req)).json()["choices"][0]["message"]["content"]
    b = (await client.post("/v1/chat/completions", json=req)).json()["choices"][0]["message"]["content"]
    assert a == b
    greedy = {"model": "exlsp", "messages": HI, "max_tokens": 16}
    full = (await client.post("/v1/chat/completions", json=greedy)).json()["choices"][0]["message"]["content"]
    assert len(full) > 2
    stop = full[2:4]
    cut = (await client.post("/v1/chat/completions", json={**greedy, "stop": [stop]})).json()
    assert stop not in cut["choices"][0]["message"]["content"]
    assert cut["choices"][0]["finish_reason"] == "stop"


async def test_chat_stream_ends_with_done(client):
    r = await client.post("/v1/chat/completions", json={"model": "exlsp", "messages": HI, "max_tokens": 8,
                                                         "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text


async def test_completions_with_suffix_use_the_completion_pipeline(client, assistant):
    before = assistant.counters.completions
    r = await client.post("/v1/completions", json={"model": "exlsp", "prompt": "def add(a, b):\n    return ",
                                                    "suffix": "\n", "max_tokens": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and isinstance(body["choices"][0]["text"], str)
    assert body["usage"]["prompt_tokens"] > 0
    assert assistant.counters.completions == before + 1


async def test_completions_plain_and_streamed(client):
    r = await client.post("/v1/completions", json={"model": "exlsp", "prompt": "1, 2, 3,", "max_tokens": 6})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
    r = await client.post("/v1/completions", json={"model": "exlsp", "prompt": "1, 2, 3,", "max_tokens": 6, "stream": True})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]" and "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])


# ---- Ollama ------------------------------------------------------------------------------------------

TIMINGS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration")


async def test_ollama_version_tags_show(client, assistant):
    assert (await client.get("/api/version")).json()["version"]
    tags = (await client.get("/api/tags")).json()["models"]
    assert tags[0]["name"] == f"{assistant.model.name}:latest"
    show = await client.post("/api/show", json={"model": tags[0]["name"]})
    assert show.status_code == 200 and "details" in show.json()
    assert (await client.post("/api/show", json={"model": "llama3:8b"})).status_code == 404


async def test_ollama_chat_streams_ndjson(client, assistant):
    r = await client.post("/api/chat", json={"model": f"{assistant.model.name}:latest", "messages": HI,
                                             "options": {"num_predict": 8}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines() if line]
    assert all(not line["done"] for line in lines[:-1])
    last = lines[-1]
    assert last["done"] is True and all(isinstance(last[k], int) for k in TIMINGS)
    assert last["eval_count"] > 0 and last["total_duration"] > 0
    assert "".join(line["message"]["content"] for line in lines)


async def test_ollama_chat_and_generate_without_stream(client):
    r = await client.post("/api/chat", json={"model": "exlsp", "messages": HI, "stream": False,
                                             "options": {"num_predict": 6, "temperature": 0.5, "seed": 1}})
    body = r.json()
    assert r.status_code == 200 and body["done"] is True and body["message"]["content"]
    r = await client.post("/api/generate", json={"model": "exlsp", "prompt": "Say hi.", "stream": False,
                                                 "options": {"num_predict": 6}})
    body = r.json()
    assert body["done"] is True and body["response"] and all(k in body for k in TIMINGS)


async def test_ollama_generate_streams_and_fills_in_the_middle(client):
    r = await client.post("/api/generate", json={"model": "exlsp", "prompt": "1, 2, 3,", "raw": True,
                                                 "options": {"num_predict": 6}})
    lines = [json.loads(line) for line in r.text.splitlines() if line]
    assert lines[-1]["done"] is True and all(k in lines[-1] for k in TIMINGS)
    r = await client.post("/api/generate", json={"model": "exlsp", "prompt": "def add(a, b):\n    return ",
                                                 "suffix": "\n", "stream": False, "options": {"num_predict": 8}})
    assert r.status_code == 200 and r.json()["done"] is True and isinstance(r.json()["response"], str)


# ---- bad input -------------------------------------------------------------------------------------


async def test_bad_input_is_a_4xx_in_the_dialect(client, assistant):
    cases = [
        ("/v1/chat/completions", b"{not json", 400),
        ("/v1/chat/completions", json.dumps({"model": "exlsp", "messages": "hi"}).encode(), 400),
        ("/v1/chat/completions", json.dumps({"model": "exlsp", "messages": HI, "max_tokens": "9"}).encode(), 400),
        ("/v1/chat/completions", json.dumps({"model": "gpt-4", "messages": HI}).encode(), 404),
        ("/v1/chat/completions", json.dumps({"model": "exlsp", "messages": HI, "max_tokens": 10**6}).encode(), 400),
        ("/v1/completions", json.dumps({"model": "exlsp"}).encode(), 400),
        ("/v1/chat/completions", b'{"model": "exlsp", "pad": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400),
        ("/v1/chat/completions", b'{"model": "exl\xdfsp", "messages": []}', 400),
        ("/v1/chat/completions", json.dumps({"model": "exlsp", "messages": HI, "pad": "x" * 20_000}).encode(), 413),
    ]
    for path, data, status in cases:
        r = await client.post(path, content=data, headers={"content-type": "application/json"})
        assert r.status_code == status, (path, data[:60], r.text)
        assert isinstance(r.json()["error"]["message"], str) and "Traceback" not in r.text
    ollama = [
        ("/api/chat", b"[1, 2", 400),
        ("/api/chat", json.dumps({"model": "exlsp", "messages": [{"role": 1}]}).encode(), 400),
        ("/api/generate", json.dumps({"model": "llama3", "prompt": "x"}).encode(), 404),
        ("/api/generate", json.dumps({"model": "exlsp", "prompt": "x", "options": {"num_predict": 10**6}}).encode(), 400),
        ("/api/generate", b"{" + b" " * 20_000 + b"}", 413),
    ]
    for path, data, status in ollama:
        r = await client.post(path, content=data)
        assert r.status_code == status, (path, data[:60], r.text)
        assert isinstance(r.json()["error"], str)


async def test_body_over_the_limit_without_content_length(assistant):
    async def chunks():
        for _ in range(20):
            yield b" " * 1000

    async with client_for(make_app(assistant, token=None, max_body_bytes=10_000)) as c:
        r = await c.post("/v1/chat/completions", content=chunks())
        assert r.status_code == 413


# ---- auth and binding ---------------------------------------------------------------------------------


async def test_token_auth(assistant):
    async with client_for(make_app(assistant, token="s3cret")) as c:
        assert (await c.get("/v1/models")).status_code == 401
        assert (await c.get("/v1/models", headers={"Authorization": "Bearer wrong"})).status_code == 401
        r = await c.get("/api/tags", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and isinstance(r.json()["error"], str)
        assert (await c.get("/v1/models", headers={"Authorization": "Bearer s3cret"})).status_code == 200


def test_check_bind():
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        with pytest.raises(ExlspError, match="token"):
            check_bind(host, None)
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.5"):
        check_bind(host, None)
    check_bind("0.0.0.0", "tok")


# ---- for real: uvicorn in a task group; a client leaving mid-stream cancels the job -----------------


async def test_serve_for_real_and_disconnect_cancels(assistant, real_engine):
    app = make_app(assistant, token="t")
    async with anyio.create_task_group() as tg:
        port = await tg.start(functools.partial(serve_http, app, "127.0.0.1", 0, token="t"))
        assert port > 0
        headers = {"Authorization": "Bearer t"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
            r = await c.get("/v1/models")
            assert r.status_code == 200 and r.json()["data"][0]["id"] == assistant.model.name
            before = real_engine.stats.jobs_cancelled
            req = {"model": "exlsp", "prompt": "1, 2, 3, 4, 5,", "max_tokens": 1000, "stream": True}
            async with c.stream("POST", "/v1/completions", json=req) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        break  # leave after the first chunk: the connection closes
        await wait_for(lambda: real_engine.stats.jobs_cancelled >= before + 1)
        await wait_for(lambda: real_engine.status()["running"] is None)
        tg.cancel_scope.cancel()


async def test_connections_are_served_without_nagle(assistant, monkeypatch):
    """The listening socket sets TCP_NODELAY (accepted connections inherit it): with Nagle, the first
    streamed chunk after the headers waited for the client's delayed ACK - bench http measured a
    steady +35 ms on the Ollama route's first token."""
    import socket as socketlib

    from exlsp.lsp import http_api

    made: list[socketlib.socket] = []

    class Recording(socketlib.socket):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(http_api.socket, "socket", Recording)
    app = make_app(assistant, token="t")
    async with anyio.create_task_group() as tg:
        port = await tg.start(functools.partial(serve_http, app, "127.0.0.1", 0, token="t"))
        monkeypatch.undo()
        listener = next(s for s in made if s.getsockname()[1] == port)
        assert listener.getsockopt(socketlib.IPPROTO_TCP, socketlib.TCP_NODELAY) != 0
        tg.cancel_scope.cancel()
