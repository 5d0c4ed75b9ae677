"""The engine on the test double: streaming, lanes, cancellation, priorities, stops, trimming."""

from __future__ import annotations

import asyncio
import time

import pytest

from exlsp.runtime import Completion, Delta, GenerationRequest, Priority


async def run(engine, **kw) -> tuple[list[Delta], Completion]:
    stream = await engine.generate(GenerationRequest(**kw))
    deltas = []
    async for event in stream:
        if isinstance(event, Delta):
            deltas.append(event)
    return deltas, stream.final


async def test_deltas_add_up_to_the_final_text(make_fake_engine):
    engine = make_fake_engine()
    deltas, final = await run(engine, prompt="hello world", max_tokens=20)
    assert final.stop_reason == "length"
    assert final.generated_tokens == 20 == len(final.tokens)
    assert "".join(d.text for d in deltas) == final.text
    assert final.prompt_tokens == len("hello world") + 1  # + BOS
    assert final.reused_tokens == 0 and final.prefilled_tokens == final.prompt_tokens


async def test_warm_lane_output_equals_cold_output(make_fake_engine):
    warm = make_fake_engine()
    await run(warm, prompt="def add(a, b):\n    return", max_tokens=8)
    _, hot = await run(warm, prompt="def add(a, b):\n    return a", max_tokens=12)
    _, cold = await run(make_fake_engine(), prompt="def add(a, b):\n    return a", max_tokens=12)
    assert hot.reused_tokens > 20 and cold.reused_tokens == 0
    assert hot.tokens == cold.tokens


async def test_interleaved_prompts_each_keep_their_lane(make_fake_engine):
    engine = make_fake_engine(lanes=2)
    a, b = "# file a\n" * 10, "// file b\n" * 10
    await run(engine, prompt=a, max_tokens=2)
    await run(engine, prompt=b, max_tokens=2)
    _, ra = await run(engine, prompt=a + "x", max_tokens=2)
    _, rb = await run(engine, prompt=b + "y", max_tokens=2)
    assert ra.lane != rb.lane
    assert ra.reused_tokens == len(a) + 1 and rb.reused_tokens == len(b) + 1
    assert ra.prefilled_tokens == 1 and rb.prefilled_tokens == 1


async def test_reuse_off_prefills_everything(make_fake_engine):
    engine = make_fake_engine()
    await run(engine, prompt="abcdef" * 5, max_tokens=2)
    _, r = await run(engine, prompt="abcdef" * 5, max_tokens=2, reuse_cache=False)
    assert r.reused_tokens == 0 and r.prefilled_tokens == r.prompt_tokens


async def test_identical_prompt_reevaluates_one_token(make_fake_engine):
    engine = make_fake_engine()
    _, first = await run(engine, prompt="same prompt", max_tokens=5)
    _, again = await run(engine, prompt="same prompt", max_tokens=5)
    assert again.prefilled_tokens == 1 and again.tokens == first.tokens


async def test_cancel_stops_at_next_token_and_lane_stays_correct(make_fake_engine):
    engine = make_fake_engine(token_delay_s=0.01)
    backend = engine.backend
    stream = await engine.generate(GenerationRequest(prompt="long job", max_tokens=400))
    async for event in stream:
        if isinstance(event, Delta):
            break
    stream.cancel()
    final = await stream.result()
    assert final.stop_reason == "cancelled"
    assert final.generated_tokens < 50
    evaluated = backend.evaluated
    await asyncio.sleep(0.1)
    assert backend.evaluated == evaluated  # really stopped
    _, warm = await run(engine, prompt="long job, then more", max_tokens=10)
    _, cold = await run(make_fake_engine(), prompt="long job, then more", max_tokens=10)
    assert warm.tokens == cold.tokens


async def test_cancel_mid_prefill(make_fake_engine):
    engine = make_fake_engine(token_delay_s=0.002, n_ctx=4096)
    prompt = "x = 1\n" * 300
    stream = await engine.generate(GenerationRequest(prompt=prompt, max_tokens=4))
    await asyncio.sleep(0.3)
    stream.cancel()
    final = await stream.result()
    assert final.stop_reason == "cancelled" and final.generated_tokens == 0
    assert 0 < final.prefilled_tokens < final.prompt_tokens
    _, warm = await run(engine, prompt=prompt, max_tokens=6)
    _, cold = await run(make_fake_engine(n_ctx=4096), prompt=prompt, max_tokens=6)
    assert warm.reused_tokens == final.prefilled_tokens
    assert warm.tokens == cold.tokens


async def test_leaving_the_iteration_cancels_the_job(make_fake_engine):
    engine = make_fake_engine(token_delay_s=0.005)

    async def consume():
        stream = await engine.generate(GenerationRequest(prompt="abc", max_tokens=500))
        async for _ in stream:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if engine.stats.jobs_cancelled == 1:
            break
        await asyncio.sleep(0.01)
    assert engine.stats.jobs_cancelled == 1


async def test_newer_request_supersedes_older(make_fake_engine):
    engine = make_fake_engine(token_delay_s=0.005)
    old = await engine.generate(GenerationRequest(prompt="a", max_tokens=300, supersede_key="doc1"))
    other = await engine.generate(GenerationRequest(prompt="b", max_tokens=3, supersede_key="doc2"))
    new = await engine.generate(GenerationRequest(prompt="ab", max_tokens=3, supersede_key="doc1"))
    r_old, r_other, r_new = await asyncio.gather(old.result(), other.result(), new.result())
    assert r_old.stop_reason == "superseded"
    assert r_other.stop_reason == "length" and r_new.stop_reason == "length"
    assert engine.stats.jobs_superseded == 1


async def test_priorities_and_preemption(make_fake_engine):
    engine = make_fake_engine(token_delay_s=0.003, lanes=4, groups={"completion": 2, "chat": 1, "background": 1})
    order: list[str] = []

    async def job(name, priority, group, n):
        stream = await engine.generate(
            GenerationRequest(prompt=name, max_tokens=n, priority=priority, lane_group=group)
        )
        final = await stream.result()
        order.append(name)
        return final

    chat = asyncio.create_task(job("chat", Priority.CHAT, "chat", 150))
    await asyncio.sleep(0.05)  # chat is now decoding
    tasks = [
        asyncio.create_task(job("background", Priority.BACKGROUND, "background", 5)),
        asyncio.create_task(job("shell", Priority.SHELL, "completion", 5)),
        asyncio.create_task(job("inline", Priority.INLINE, "completion", 5)),
    ]
    results = await asyncio.gather(chat, *tasks)
    assert order == ["inline", "shell", "chat", "background"]
    assert results[0].preemptions >= 1 and results[0].generated_tokens == 150
    # the chat resumed on its own lane: pre-emption cost one re-evaluated token each time
    assert results[0].prefilled_tokens == results[0].prompt_tokens + results[0].preemptions


async def test_stop_strings_are_cut_and_never_streamed(make_fake_engine):
    engine = make_fake_engine(script=[("Q:", " hello world END more")])
    deltas, final = await run(engine, prompt="Q:", max_tokens=40, stop=["END"])
    assert final.stop_reason == "stop"
    assert final.text == " hello world "
    assert "".join(d.text for d in deltas) == final.text


async def test_eos_stops_and_is_not_output(make_fake_engine):
    engine = make_fake_engine(script=[("Q:", " yes")])
    _, final = await run(engine, prompt="Q:", max_tokens=40)
    assert final.stop_reason == "eos" and final.text == " yes" and final.generated_tokens == 4


async def test_time_budget_ends_at_a_line_end(make_fake_engine):
    engine = make_fake_engine(token_delay_s=0.002, script=[("Q:", "ab\ncd\nef\ngh\nij\n" * 20)])
    _, final = await run(engine, prompt="Q:", max_tokens=200, t_max_predict_ms=20)
    assert final.stop_reason == "time"
    assert final.text.endswith("\n") and len(final.text) < 200


async def test_prompt_longer_than_context_is_trimmed_from_the_left(make_fake_engine):
    engine = make_fake_engine(n_ctx=256)
    prompt = "".join(f"line {i}\n" for i in range(200))
    _, final = await run(engine, prompt=prompt, max_tokens=16)
    assert final.stop_reason == "length"
    assert final.trimmed_tokens > 0
    assert final.prompt_tokens + 16 <= 256
    assert final.prompt_tokens == len(prompt) + 1 - final.trimmed_tokens


async def test_backend_failure_ends_the_job_not_the_engine(make_fake_engine):
    engine = make_fake_engine()
    engine.backend.fail_next_eval = RuntimeError("device lost")
    _, broken = await run(engine, prompt="boom", max_tokens=5)
    assert broken.stop_reason == "error" and "device lost" in broken.error
    _, ok = await run(engine, prompt="boom", max_tokens=5)
    _, cold = await run(make_fake_engine(), prompt="boom", max_tokens=5)
    assert ok.stop_reason == "length" and ok.tokens == cold.tokens


async def test_many_concurrent_jobs_all_finish(make_fake_engine):
    engine = make_fake_engine()
    finals = await asyncio.gather(
        *[run(engine, prompt=f"job {i}", max_tokens=5, priority=Priority(i % 4)) for i in range(40)]
    )
    assert all(f.stop_reason == "length" for _, f in finals)
    assert engine.stats.jobs_completed == 40


async def test_closed_engine_refuses_jobs(make_fake_engine):
    from exlsp.runtime import EngineClosed

    engine = make_fake_engine()
    engine.close()
    with pytest.raises(EngineClosed):
        await engine.generate(GenerationRequest(prompt="x"))


async def test_status_reports_cache_hit_rate(make_fake_engine):
    engine = make_fake_engine()
    await run(engine, prompt="abcdefgh" * 4, max_tokens=2)
    await run(engine, prompt="abcdefgh" * 4 + "i", max_tokens=2)
    status = engine.status()
    assert status["backend"] == "fake"
    assert 0.4 < status["cache_hit_rate"] < 0.6
    assert [lane["tokens"] for lane in status["lanes"]].count(0) == 2
    assert time.time() - engine.started_at < 60


async def test_stop_check_ends_generation_where_it_says(make_fake_engine):
    engine = make_fake_engine(script=[("Q:", "line one\nline two\nline three\n")])
    def cut_at(text: str) -> int | None:  # the first character of the second line ends it
        i = text.find("\n")
        return i + 1 if 0 <= i < len(text) - 1 else None

    deltas, final = await run(engine, prompt="Q:", max_tokens=60, stop_check=cut_at)
    assert final.stop_reason == "stop" and final.text == "line one\n"
    assert "".join(d.text for d in deltas) == final.text
    assert final.generated_tokens < len("line one\nline two\n")


async def test_a_waiting_chat_ages_past_a_stream_of_shell_jobs_but_not_past_inline(make_fake_engine):
    """Strict priorities would starve a chat behind a steady stream of shell suggestions: after
    ``aging_s`` it competes as a shell job (in submission order). Inline completions still pre-empt."""
    engine = make_fake_engine(token_delay_s=0.002, lanes=3, groups={"completion": 1, "shell": 1, "chat": 1})
    engine.aging_s = 0.3
    done: list[str] = []
    flooding = True

    async def shells():
        i = 0
        while flooding:  # always one shell job queued behind the running one
            a = await engine.generate(GenerationRequest(prompt=f"s{i}", max_tokens=10, priority=Priority.SHELL,
                                                        lane_group="shell"))
            b = await engine.generate(GenerationRequest(prompt=f"t{i}", max_tokens=10, priority=Priority.SHELL,
                                                        lane_group="shell"))
            await a.result()
            await b.result()
            i += 1

    flood = asyncio.create_task(shells())
    await asyncio.sleep(0.05)
    chat = await engine.generate(GenerationRequest(prompt="chat", max_tokens=60, priority=Priority.CHAT, lane_group="chat"))
    t0 = asyncio.get_running_loop().time()
    async for event in chat:
        if isinstance(event, Delta) and not done:
            done.append("chat started")
            inline = await engine.generate(GenerationRequest(prompt="x", max_tokens=5, priority=Priority.INLINE,
                                                             lane_group="completion"))
    waited = asyncio.get_running_loop().time() - t0
    final = chat.final
    inline_final = await inline.result()
    flooding = False
    await flood
    assert final.stop_reason == "length" and final.generated_tokens == 60
    assert waited < 3.0  # without aging it would wait for the flood (which only ends after it)
    assert final.preemptions >= 1 and inline_final.stop_reason == "length"  # inline still came first


async def test_time_spent_running_does_not_age_a_job(make_fake_engine):
    """Aging counts waiting, not running: a chat that ran past ``aging_s`` and was pre-empted once
    must not come back as a shell job that later shell requests cannot pre-empt."""
    engine = make_fake_engine(token_delay_s=0.01, lanes=3, n_ctx=2048, groups={"completion": 1, "shell": 1, "chat": 1})
    engine.aging_s = 0.3
    chat = await engine.generate(GenerationRequest(prompt="chat", max_tokens=200, priority=Priority.CHAT,
                                                   lane_group="chat", stop_at_eos=False))
    finished = asyncio.ensure_future(chat.result())
    await asyncio.sleep(0.5)  # the chat has been running, not waiting
    for name in ("s1", "s2"):
        shell = await engine.complete(GenerationRequest(prompt=name, max_tokens=3, priority=Priority.SHELL,
                                                        lane_group="shell", stop_at_eos=False))
        assert shell.queue_ms < 150, (name, shell.queue_ms)  # pre-empted the chat: no wait for it to end
        await asyncio.sleep(0.05)
    assert not finished.done()
    assert (await finished).preemptions == 2
