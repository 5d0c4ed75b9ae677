"""In-process faults (docs/faults.md, "In-process faults"): the backend raising mid-job, the
owner thread dying, plugin hooks that hang or leak, clients gone mid-stream at each front door,
and delta callbacks raising. Faults are injected precisely on the test double (``FakeBackend``
behind ``FaultyBackend``) and, for each kind of fault, at least once through the real model."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import shutil
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import anyio
import httpx
import pytest

from exlsp.lsp.http_api import make_app, serve_http
from exlsp.lsp.inprocess import connect, initialize_params
from exlsp.lsp.server import ServerState, build_server
from exlsp.lsp.socket_server import SocketServer
from exlsp.plugins import hookimpl
from exlsp.plugins.api import ChatMessage, ChatQuery, CompletionQuery
from exlsp.plugins.assistant import Assistant
from exlsp.plugins.builtin.context import PROVIDER, RING
from exlsp.plugins.guard import MAX_PLUGIN_THREADS
from exlsp.plugins.manager import PluginFailed, PluginManager
from exlsp.runtime import BackendConfig, Completion, Delta, Engine, EngineClosed, GenerationRequest
from exlsp.runtime.backends.fake import FakeBackend, FaultyBackend

GROUPS = {"completion": 2, "shell": 1, "chat": 1}  # as the session's real engine


async def wait_for(predicate, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


def fake_engine(token_delay_s: float = 0.0) -> Engine:
    backend = FakeBackend(BackendConfig(n_lanes=4, n_ctx=512, n_batch=16), token_delay_s=token_delay_s)
    return Engine(FaultyBackend(backend, close_inner=True), lane_groups=GROUPS)


@pytest.fixture
def fake():
    engines: list[Engine] = []

    def make(token_delay_s: float = 0.0) -> Engine:
        engines.append(fake_engine(token_delay_s))
        return engines[-1]

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.model)])
async def faulty(request):
    """(engine, faults): the test double, or the session's real model behind ``FaultyBackend``
    for the length of the test (its owner thread and lanes stay the session's)."""
    if request.param == "fake":
        engine = fake_engine()
        yield engine, engine.backend
        engine.close()
        return
    engine = request.getfixturevalue("real_engine")
    await wait_for(lambda: engine.status()["running"] is None)
    inner = engine.backend
    engine.backend = FaultyBackend(inner)
    try:
        yield engine, engine.backend
    finally:
        await wait_for(lambda: engine.status()["running"] is None)
        engine.backend = inner
        engine.clear_cache()  # whatever a fault left, later tests start from empty lanes


async def run(engine: Engine, prompt: str, **kw) -> tuple[str, Completion]:
    """(the streamed text, the final record) of one job on the one-lane "chat" group."""
    kw.setdefault("max_tokens", 6)
    stream = await engine.generate(GenerationRequest(prompt=prompt, lane_group="chat", stop_at_eos=False, **kw))
    text = "".join([event.text async for event in stream if isinstance(event, Delta)])
    return text, stream.final


def healthy(engine: Engine) -> None:
    status = engine.status()
    assert status["running"] is None and status["alive"] and status["engine_error"] is None


BASE = "def add(a, b):\n    return a + b\n\n"
FOLLOW = BASE + "def sub(a, b):\n    return"


# ---- 1. the backend raising mid-job -------------------------------------------------------------------


async def test_backend_raising_mid_prefill_resets_the_lane(faulty):
    engine, faults = faulty
    await run(engine, BASE)  # the lane now holds BASE and its answer
    failed = engine.stats.jobs_failed
    faults.fail("eval", partial=True)  # half the new suffix reaches the cache, then the device fails
    text, broken = await run(engine, FOLLOW)
    assert broken.stop_reason == "error" and text == broken.text == ""
    assert "backend failed during prefill: RuntimeError: injected eval failure" in broken.error
    assert engine.stats.jobs_failed == failed + 1
    healthy(engine)
    assert engine.lanes.lanes[broken.lane].tokens == []  # marked empty: the stale cache is never reused
    _, again = await run(engine, FOLLOW)
    _, cold = await run(engine, FOLLOW, reuse_cache=False)
    assert again.stop_reason == "length" and again.lane == broken.lane and again.reused_tokens == 0
    assert again.tokens == cold.tokens


async def test_backend_raising_mid_decode_keeps_what_was_streamed(faulty):
    engine, faults = faulty
    _, cold = await run(engine, FOLLOW, max_tokens=8, reuse_cache=False)
    faults.fail("eval", after=1 + 3)  # the prefill, three decode steps, then the fourth fails
    text, broken = await run(engine, FOLLOW, max_tokens=8, reuse_cache=False)  # prefilled as the cold run
    assert broken.stop_reason == "error" and "during decode" in broken.error
    assert broken.tokens == cold.tokens[:4] and text == broken.text
    healthy(engine)
    _, again = await run(engine, FOLLOW, max_tokens=8)
    assert again.stop_reason == "length" and again.reused_tokens == 0 and again.tokens == cold.tokens


async def test_backend_raising_on_trim_and_on_reset_leaves_no_stuck_lane(faulty):
    engine, faults = faulty
    await run(engine, BASE)
    faults.fail("truncate", times=2)  # the trim while placing the job, then the reset after it
    _, broken = await run(engine, FOLLOW)
    assert broken.stop_reason == "error" and "during trim" in broken.error
    assert engine.lanes.lanes[broken.lane].tokens == []  # the book says empty though the cache was not cut
    healthy(engine)
    _, again = await run(engine, FOLLOW)
    _, cold = await run(engine, FOLLOW, reuse_cache=False)
    assert again.stop_reason == "length" and again.lane == broken.lane and again.tokens == cold.tokens


async def test_backend_raising_every_time_fails_each_job_once_without_spinning(faulty):
    engine, faults = faulty
    faults.fail("eval", times=-1)
    calls = faults.calls["eval"]
    finals = await asyncio.gather(*(run(engine, f"# job {i}\n") for i in range(4)))
    assert [f.stop_reason for _, f in finals] == ["error"] * 4
    assert faults.calls["eval"] - calls == 4  # one attempt per job: no retry loop
    await anyio.sleep(0.1)
    assert faults.calls["eval"] - calls == 4  # and nothing runs once they have ended
    healthy(engine)
    faults.heal()
    _, ok = await run(engine, "# job ok\n")
    assert ok.stop_reason == "length"


async def test_other_queued_jobs_still_run(faulty):
    engine, faults = faulty
    faults.fail("eval")  # the first job placed fails; the two queued behind it must not
    finals = await asyncio.gather(*(run(engine, f"# queued {i}\n") for i in range(3)))
    assert sorted(f.stop_reason for _, f in finals) == ["error", "length", "length"]
    healthy(engine)


class OwnerKilled(BaseException):
    """Escapes the per-job handler, as only a BaseException can: the owner thread dies."""


async def test_owner_thread_death_fails_waiting_and_new_jobs(fake):
    engine = fake(token_delay_s=0.01)
    engine.backend.fail("eval", OwnerKilled("boom"), after=1 + 2)
    running = await engine.generate(GenerationRequest(prompt="long", max_tokens=200, lane_group="chat"))
    queued = await engine.generate(GenerationRequest(prompt="queued", max_tokens=5, lane_group="chat"))
    with anyio.fail_after(10):  # nobody waits for ever on a dead thread
        first, second = await running.result(), await queued.result()
    for final in (first, second):
        assert final.stop_reason == "error" and final.error == "the engine stopped: OwnerKilled: boom"
    assert first.generated_tokens == 3
    await wait_for(lambda: not engine._thread.is_alive())
    status = engine.status()
    assert status["running"] is None and status["queued"] == 0 and not status["alive"]
    assert status["engine_error"] == "the engine stopped: OwnerKilled: boom"
    with pytest.raises(EngineClosed, match="the engine stopped: OwnerKilled: boom"):
        await engine.generate(GenerationRequest(prompt="after"))


async def test_a_dropped_stream_cancels_its_job(fake):
    engine = fake(token_delay_s=0.002)

    async def consume_and_fail() -> None:
        stream = await engine.generate(GenerationRequest(prompt="x", max_tokens=400, lane_group="chat"))
        try:
            async for _ in stream:
                raise RuntimeError("the consumer broke")  # no aclose: only the dropped stream tells
        except RuntimeError:
            pass

    await consume_and_fail()
    gc.collect()
    await wait_for(lambda: engine.stats.jobs_cancelled == 1, timeout=5)
    assert engine.stats.generated_tokens < 400
    healthy(engine)


# ---- 2. plugin hooks that hang or leak --------------------------------------------------------------


class Provider:
    """A context provider whose ``provide`` misbehaves on the calls ``when(n)`` picks (n from 1)."""

    kinds = frozenset({"completion"})

    def __init__(self, behaviour: str, when=lambda n: True, timeout_s: float = 0.1, name: str = "bad") -> None:
        self.name, self.behaviour, self.when, self.timeout_s = name, behaviour, when, timeout_s
        self.calls = 0
        self.release = threading.Event()
        self.held: list[bytearray] = []

    def provide(self, query, model):
        self.calls += 1
        if self.when(self.calls):
            if self.behaviour == "hang":
                self.release.wait()
            elif self.behaviour == "hang-holding":  # a hung call that keeps 1 MB alive while it hangs
                buffer = bytearray(1 << 20)
                self.release.wait()
                del buffer
            elif self.behaviour == "slow":
                time.sleep(self.timeout_s * 2.5)
            elif self.behaviour == "threads":
                threading.Thread(target=self.release.wait, daemon=True).start()
        return []


class AsyncProvider(Provider):
    async def provide(self, query, model):
        self.calls += 1
        if self.when(self.calls):
            if self.behaviour == "hang":
                await anyio.sleep_forever()
            elif self.behaviour == "threads":
                threading.Thread(target=self.release.wait, daemon=True).start()
        return []


def plugin_with(provider: Provider):
    class Plugin:
        @hookimpl
        def exlsp_register_context_providers(self, register):
            register(provider)

    return Plugin()


@pytest.fixture
def providers():
    made: list[Provider] = []

    def make(cls=Provider, *args, **kwargs) -> Provider:
        made.append(cls(*args, **kwargs))
        return made[-1]

    yield make
    for provider in made:
        provider.release.set()  # let every hung thread end


def manager_with(provider: Provider, builtins: bool = False, **kwargs) -> PluginManager:
    pm = PluginManager(local_dirs=[], entry_points=builtins, **kwargs)
    pm.load()
    pm.register_object(plugin_with(provider), "bad")
    return pm


def status_of(pm: PluginManager, name: str = "bad") -> tuple[str, str]:
    [info] = [i for i in pm.report() if i.name == name]
    return info.status, info.reason


async def call_n(pm: PluginManager, n: int) -> list[bool]:
    """``provide`` through the guard n times (stopping once the plugin is blocked); True: ok."""
    outcomes = []
    for _ in range(n):
        regs = [r for r in pm.context_providers("completion") if r.plugin == "bad"]
        if not regs:
            break
        try:
            await pm.guarded(regs[0], "provide", None, None)
            outcomes.append(True)
        except PluginFailed as exc:
            outcomes.append(False)
            if exc.blocked:
                break
    return outcomes


async def test_one_slow_call_is_a_strike_not_a_block(providers):
    slow = providers(Provider, "slow", when=lambda n: n == 1)
    pm = manager_with(slow)
    [reg] = pm.context_providers("completion")
    with pytest.raises(PluginFailed) as caught:
        await pm.guarded(reg, "provide", None, None, timeout_s=0.1)
    assert not caught.value.blocked and "timed out after 0.1 s (strike 1 of 3)" in str(caught.value)
    assert status_of(pm) == ("enabled", "")
    assert await call_n(pm, 5) == [True] * 5


async def test_sparse_slow_calls_are_never_blocked(providers):
    slow = providers(Provider, "slow", when=lambda n: n % 21 == 1, timeout_s=0.2)  # calls 1, 22, 43
    pm = manager_with(slow, hook_timeout_s=0.2)
    outcomes = await call_n(pm, 50)
    assert len(outcomes) == 50 and outcomes.count(False) == 3
    assert status_of(pm)[0] == "enabled"


async def test_three_strikes_among_the_last_twenty_calls_block(providers):
    slow = providers(Provider, "slow", when=lambda n: n in (1, 8, 15), timeout_s=0.2)
    pm = manager_with(slow, hook_timeout_s=0.2)
    outcomes = await call_n(pm, 50)
    assert len(outcomes) == 15 and outcomes.count(False) == 3 and slow.calls == 15
    status, reason = status_of(pm)
    assert status == "blocked" and reason == "provide() timed out after 0.2 s; 3 of its last 15 calls were over budget"


async def test_sparse_hangs_are_blocked_when_three_are_stuck(providers):
    hang = providers(Provider, "hang", when=lambda n: n % 10 == 1)  # never more than 2 strikes in 20 calls
    pm = manager_with(hang, hook_timeout_s=0.2)
    outcomes = await call_n(pm, 50)
    assert len(outcomes) == 21 and hang.calls == 21
    assert status_of(pm) == ("blocked", "provide() timed out after 0.2 s; 3 of its calls are still running past their budget")


@pytest.mark.parametrize("cls", [Provider, AsyncProvider], ids=["sync", "async"])
async def test_hung_hook_is_given_up_on_and_the_loop_runs_on(providers, fake, cls):
    engine = fake()
    hang = providers(cls, "hang", timeout_s=0.2)
    pm = manager_with(hang, builtins=True)
    assistant = Assistant(engine, pm)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        t0 = time.perf_counter()
        answer = await assistant.complete(CompletionQuery(prefix="def add(a, b):\n    return", max_tokens=4))
        elapsed = time.perf_counter() - t0
        tg.cancel_scope.cancel()
    assert answer.stop_reason in ("length", "stop", "eos") and elapsed < 2
    assert ticks >= 5  # the loop ran on while the hook hung (0.2 s of 10 ms ticks, with slack)
    for _ in range(4):
        await assistant.complete(CompletionQuery(prefix="x = ", max_tokens=2))
    assert hang.calls == 3 and status_of(pm)[0] == "blocked"


def live_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.is_alive())


async def test_hung_calls_hold_bounded_threads_and_memory(providers, fake):
    engine = fake()
    hang = providers(Provider, "hang-holding", timeout_s=0.1)
    pm = manager_with(hang, builtins=True)
    assistant = Assistant(engine, pm)
    await assistant.complete(CompletionQuery(prefix="warm = ", max_tokens=2))  # warm every pool (1st strike)
    threads = live_threads()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50):
            answer = await assistant.complete(CompletionQuery(prefix=f"n{i} = ", max_tokens=2))
            assert answer.stop_reason != "error"
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert hang.calls == 3 and status_of(pm)[0] == "blocked"
    assert held < 4 << 20  # two more hung calls hold 1 MB each; 50 would hold 50 MB
    assert live_threads() - threads <= 2 + 1  # two more stuck threads (+1: a pool thread)


@pytest.mark.parametrize("cls", [Provider, AsyncProvider], ids=["sync", "async"])
async def test_plugin_leaking_threads_is_blocked(providers, fake, cls):
    engine = fake()
    leak = providers(cls, "threads", timeout_s=1.0)
    pm = manager_with(leak, builtins=True)
    assistant = Assistant(engine, pm)
    await assistant.complete(CompletionQuery(prefix="warm = ", max_tokens=2))
    threads = live_threads()
    for i in range(50):
        await assistant.complete(CompletionQuery(prefix=f"n{i} = ", max_tokens=2))
    status, reason = status_of(pm)
    assert status == "blocked" and reason == f"its calls left {MAX_PLUGIN_THREADS + 1} threads running (at most 8)"
    assert leak.calls == MAX_PLUGIN_THREADS + 1
    assert live_threads() - threads <= MAX_PLUGIN_THREADS + 1


async def test_builtin_ring_survives_a_slow_call_and_is_blocked_after_three(fake, monkeypatch):
    engine = fake()
    pm = PluginManager(local_dirs=[], entry_points=True)
    pm.load()
    assistant = Assistant(engine, pm)
    RING.clear()
    RING.add("/t/other.py", "def helper():\n    return 42\n")
    provide, slow = PROVIDER.provide, []

    def maybe_slow(query, model):
        if slow:
            slow.pop()
            time.sleep(PROVIDER.timeout_s * 3)
        return provide(query, model)

    monkeypatch.setattr(PROVIDER, "provide", maybe_slow)
    query = CompletionQuery(prefix="x = helper(", path="/t/main.py", max_tokens=2)
    try:
        slow.append(1)
        assert (await assistant.complete(query)).stop_reason != "error"
        assert status_of(pm, "context")[0] == "enabled"  # one slow call: no context this once
        assert [c.path for c in await assistant._context("completion", query)] == ["/t/other.py"]
        slow.extend([1, 1, 1])
        for _ in range(3):
            await assistant.complete(query)
        status, reason = status_of(pm, "context")
        assert status == "blocked" and "timed out after 0.05 s; 3 of its last" in reason
    finally:
        RING.clear()


@pytest.mark.model
async def test_hung_hook_with_the_real_model(real_engine, providers):
    hang = providers(Provider, "hang", timeout_s=0.2)
    pm = manager_with(hang, builtins=True)
    assistant = Assistant(real_engine, pm)
    for i in range(4):
        answer = await assistant.complete(CompletionQuery(prefix=f"def f{i}(x):\n    return", max_tokens=3))
        assert answer.stop_reason in ("length", "stop", "eos", "time") and answer.stats.generated_tokens >= 1
    assert hang.calls == 3 and status_of(pm)[0] == "blocked"


# ---- 3. the client gone mid-stream, at each front door -----------------------------------------------


def assistant_on(engine: Engine) -> Assistant:
    pm = PluginManager(local_dirs=[], entry_points=True)
    pm.load()
    return Assistant(engine, pm)


LONG_CHAT = [{"role": "user", "content": "Write a long story about a cat."}]


async def next_chat_works(assistant: Assistant) -> None:
    answer = await assistant.chat(ChatQuery(messages=[ChatMessage("user", "Hi")], max_tokens=3))
    assert answer.stop_reason in ("length", "stop", "eos") and answer.stats.generated_tokens >= 1


@contextlib.asynccontextmanager
async def socket_server(assistant: Assistant):
    folder = Path(tempfile.mkdtemp(prefix="exf-", dir="/tmp"))  # AF_UNIX paths are short
    server = SocketServer(folder / "exlsp.sock", assistant)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            yield server
            tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_socket_client_gone_mid_chat(fake):
    engine = fake(token_delay_s=0.01)
    assistant = assistant_on(engine)
    async with socket_server(assistant) as server:
        stream = await anyio.connect_unix(server.path)
        await stream.send(b'{"type":"chat","id":1,"max_tokens":250,"messages":[{"role":"user","content":"go"}]}\n')
        assert b'"delta"' in await stream.receive()
        await stream.aclose()
        await wait_for(lambda: engine.stats.jobs_cancelled == 1)
        await wait_for(lambda: server.connections == 0)
        healthy(engine)
        assert engine.stats.generated_tokens < 250
        await next_chat_works(assistant)


def lsp_server(assistant: Assistant):
    state = ServerState(plugins=assistant.plugins)
    server = build_server(state)
    state.set_assistant(assistant)
    return server


@pytest.mark.parametrize("how", ["cancelRequest", "exit", "eof"])
async def test_lsp_client_gone_mid_chat(fake, how):
    engine = fake(token_delay_s=0.01)
    assistant = assistant_on(engine)
    async with connect(lsp_server(assistant)) as client:
        await client.initialize_async(initialize_params())
        params = {"messages": LONG_CHAT, "workDoneToken": "chat-1", "maxTokens": 250}
        task = asyncio.ensure_future(client.request("exlsp/chat", params, msg_id="chat-1"))
        await wait_for(lambda: len(client.progress["chat-1"]) >= 2)  # begin, then a first delta
        if how == "cancelRequest":
            client.cancel("chat-1")
        elif how == "exit":
            client.protocol.notify("exit", None)
        else:
            client.protocol.writer.close()  # the editor's end of the pipe: the server reads EOF
        await wait_for(lambda: engine.stats.jobs_cancelled == 1, timeout=10)
        healthy(engine)
        assert engine.stats.generated_tokens < 250
        task.cancel()
    await next_chat_works(assistant)


@pytest.mark.model
async def test_lsp_editor_gone_mid_chat_with_the_real_model(real_engine):
    assistant = assistant_on(real_engine)
    cancelled = real_engine.stats.jobs_cancelled
    async with connect(lsp_server(assistant)) as client:
        await client.initialize_async(initialize_params())
        params = {"messages": LONG_CHAT, "workDoneToken": "chat-r", "maxTokens": 400}
        task = asyncio.ensure_future(client.request("exlsp/chat", params))
        await wait_for(lambda: len(client.progress["chat-r"]) >= 2, timeout=60)
        client.protocol.writer.close()
        await wait_for(lambda: real_engine.stats.jobs_cancelled == cancelled + 1)
        await wait_for(lambda: real_engine.status()["running"] is None)
        task.cancel()
    await next_chat_works(assistant)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "exlsp", "messages": LONG_CHAT, "max_tokens": 250, "stream": True}),
        ("/api/chat", {"model": "exlsp", "messages": LONG_CHAT, "stream": True, "options": {"num_predict": 250}}),
        ("/v1/completions", {"model": "exlsp", "prompt": "1, 2, 3,", "max_tokens": 250, "stream": True}),
    ],
    ids=["openai-chat", "ollama-chat", "openai-completions"],
)
async def test_http_client_gone_mid_stream(fake, path, body):
    engine = fake(token_delay_s=0.01)
    assistant = assistant_on(engine)
    async with anyio.create_task_group() as tg:
        port = await tg.start(functools.partial(serve_http, make_app(assistant, token="t"), "127.0.0.1", 0, token="t"))
        headers = {"Authorization": "Bearer t"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as c:
            async with c.stream("POST", path, json=body) as response:
                assert response.status_code == 200
                seen = 0
                async for line in response.aiter_lines():
                    seen += bool(line.strip())
                    if seen >= 3:  # a few chunks in: leave, the connection closes
                        break
            await wait_for(lambda: engine.stats.jobs_cancelled == 1, timeout=10)
            healthy(engine)
            assert engine.stats.generated_tokens < 250
            r = await c.post("/v1/chat/completions", json={"model": "exlsp", "messages": LONG_CHAT, "max_tokens": 3})
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        tg.cancel_scope.cancel()


async def test_http_stream_closes_its_generator_when_the_send_fails():
    from starlette.requests import ClientDisconnect

    from exlsp.lsp.http_api import _Stream

    closed: list[bool] = []

    async def body():
        try:
            yield b"data: 1\n\n"
            yield b"data: 2\n\n"
        finally:
            closed.append(True)  # where the engine job would be cancelled

    async def send(message):
        if message["type"] == "http.response.body":
            raise OSError("the client is gone")

    response = _Stream(body(), media_type="text/event-stream")
    with pytest.raises(ClientDisconnect):
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, None, send)
    assert closed == [True]  # now, not when ``response`` is collected


# ---- 4. a delta callback raising (a front door's writer failing) ---------------------------------------


async def check_on_delta_raising(engine: Engine, assistant: Assistant) -> None:
    cancelled = engine.stats.jobs_cancelled
    seen: list[str] = []

    def broken_writer(text: str) -> None:
        seen.append(text)
        raise BrokenPipeError("the client's pipe is gone")

    with pytest.raises(BrokenPipeError):
        await assistant.chat(ChatQuery(messages=[ChatMessage("user", "Count to fifty.")], max_tokens=200), broken_writer)
    assert len(seen) == 1
    await wait_for(lambda: engine.stats.jobs_cancelled == cancelled + 1)
    healthy(engine)
    await next_chat_works(assistant)


async def test_on_delta_raising_cancels_the_job(fake):
    engine = fake(token_delay_s=0.002)
    await check_on_delta_raising(engine, assistant_on(engine))


@pytest.mark.model
async def test_on_delta_raising_cancels_the_job_with_the_real_model(real_engine):
    await check_on_delta_raising(real_engine, assistant_on(real_engine))


async def test_shared_executor_threads_are_not_charged_to_a_plugin():
    """A well-behaved async plugin that reads files with ``asyncio.to_thread`` starts workers of the
    loop's shared executor: they are not its leak (on a 16-core machine the pool alone would pass
    the per-plugin thread limit and block the plugin)."""
    import asyncio
    import concurrent.futures
    import time as _time

    from exlsp.plugins.guard import CallRecord, await_within

    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=20))

    async def provide():
        await asyncio.gather(*(asyncio.to_thread(_time.sleep, 0.05) for _ in range(20)))
        return []

    record = CallRecord()
    assert (await await_within(record, provide(), 5.0))[0] == []
    assert record.live_threads() == 0


async def test_a_chat_command_returning_garbage_is_blocked_and_the_chat_still_answers(real_engine, tmp_path):
    """A slash command whose messages() returns a list of something else (dicts here) is blocked like
    a wrong return type, and the chat is answered without it - not an internal error."""
    from exlsp.plugins.api import ChatMessage, ChatQuery
    from exlsp.plugins.assistant import Assistant
    from exlsp.plugins.manager import PluginManager

    (tmp_path / "badcmd.py").write_text(
        "from exlsp.plugins import hookimpl\n"
        "class Bad:\n"
        "    name = 'bad'\n"
        "    description = 'returns dicts'\n"
        "    def messages(self, argument, query):\n"
        "        return [{'role': 'user', 'content': argument}]\n"
        "@hookimpl\n"
        "def exlsp_register_chat_commands(register):\n"
        "    register(Bad())\n"
    )
    manager = PluginManager(local_dirs=[tmp_path], entry_points=True)
    manager.load()
    assert next(p for p in manager.report() if p.name == "badcmd").status == "enabled"
    assistant = Assistant(real_engine, manager)
    answer = await assistant.chat(ChatQuery(messages=[ChatMessage("user", "/bad say hi")], max_tokens=4))
    assert answer.stop_reason in ("length", "stop", "eos") and answer.stats is not None
    bad = next(p for p in manager.report() if p.name == "badcmd")
    assert bad.status == "blocked" and "other than ChatMessages" in bad.reason
