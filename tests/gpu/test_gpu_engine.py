"""The engine on the GPU backend: KV cache lanes reused across jobs give what a cold cache gives,
cancellation stops the token loop and leaves the lane consistent, two lanes keep their reuse."""

from __future__ import annotations

import asyncio

import pytest

from exlsp.runtime import Delta, GenerationRequest

pytestmark = pytest.mark.gpu


def req(prompt, **kw) -> GenerationRequest:
    kw.setdefault("lane_group", "completion")
    kw.setdefault("max_tokens", 24)
    kw.setdefault("stop_at_eos", False)
    return GenerationRequest(prompt=prompt, **kw)


async def test_warm_lane_equals_cold_cache(engine, code_text, books_match):
    base = code_text[:1200]  # ~800 tokens: prefilled in chunks
    first = await engine.complete(req(base, max_tokens=4))
    assert first.prompt_tokens > 500
    for extra in ("\n    def", "\n    def run(self"):
        warm = await engine.complete(req(base + extra, max_tokens=32))
        cold = await engine.complete(req(base + extra, max_tokens=32, reuse_cache=False))
        assert warm.reused_tokens > 500 and cold.reused_tokens == 0
        assert warm.prefilled_tokens < 10
        assert warm.tokens == cold.tokens, (warm.text, cold.text)
    books_match(engine)


async def test_cancel_mid_decode_leaves_the_lane_consistent(engine, books_match):
    stats = engine.stats
    prompt = "Here is a long story about a dragon:\n"
    stream = await engine.generate(req(prompt, max_tokens=1000))
    seen = 0
    async for event in stream:
        if isinstance(event, Delta):
            seen += len(event.tokens)
            if seen >= 3:
                stream.cancel()
                break
    final = await stream.result()
    assert final.stop_reason == "cancelled"
    # On a GPU the owner thread decodes while the event loop delivers; the cancel lands within a
    # few dozen tokens, long before the 1,000 asked for.
    assert seen <= final.generated_tokens < 500
    generated = stats.generated_tokens
    await asyncio.sleep(0.3)
    assert stats.generated_tokens == generated  # the owner thread stopped decoding
    books_match(engine)
    follow = prompt + "Once upon a time"
    warm = await engine.complete(req(follow, max_tokens=16))
    cold = await engine.complete(req(follow, max_tokens=16, reuse_cache=False))
    assert warm.reused_tokens > 0 and warm.tokens == cold.tokens
    books_match(engine)


async def test_cancel_mid_prefill_keeps_what_was_prefilled(engine, code_text, books_match, monkeypatch):
    """A cancel that arrives between two prefill chunks: the lane keeps the chunks already
    evaluated, and the next job reuses exactly those. (The cancel is sent from inside the engine's
    abort check, after the third chunk: on a GPU a whole prefill takes milliseconds.)"""
    backend = engine.backend
    evaluate = backend.eval
    text = code_text[:2400]  # ~1,600 tokens: 25 chunks of 64
    stream = None

    def eval_then_cancel(lane, tokens, start, should_abort):
        checks = 0

        def abort() -> bool:
            nonlocal checks
            checks += 1
            if checks == 4:
                stream.cancel()
            return should_abort()

        monkeypatch.undo()  # this job only
        return evaluate(lane, tokens, start, abort)

    monkeypatch.setattr(backend, "eval", eval_then_cancel)
    stream = await engine.generate(req(text, max_tokens=4, lane_group="chat"))
    final = await stream.result()
    assert final.stop_reason == "cancelled" and final.generated_tokens == 0
    assert final.prefilled_tokens == 3 * 64 < final.prompt_tokens
    books_match(engine)
    warm = await engine.complete(req(text, max_tokens=8, lane_group="chat"))
    cold = await engine.complete(req(text, max_tokens=8, lane_group="chat", reuse_cache=False))
    assert warm.reused_tokens == final.prefilled_tokens
    assert warm.tokens == cold.tokens
    books_match(engine)


async def test_two_lanes_interleaved_keep_their_reuse(engine, code_text, books_match, expected_reuse):
    """Two documents typed in turn: each keeps its own lane and reuses all but its new tail."""
    tok = engine.tokenizer
    docs = {"a": code_text[:900], "b": "# notes\n" + code_text[5000:5900]}
    lanes: dict[str, int] = {}
    books: dict[str, list[int]] = {}
    reused = prompted = 0
    for step, typed in enumerate(("", "s", "se", "sel", "self")):
        for name, doc in docs.items():
            text = doc + typed
            final = await engine.complete(req(text, max_tokens=6))
            prompt = tok.encode(text, add_bos=True)
            assert final.prompt_tokens == len(prompt)
            if step == 0:
                lanes[name] = final.lane
            else:
                assert final.lane == lanes[name], f"{name} moved lanes at step {step}"
                assert final.reused_tokens == expected_reuse(prompt, books[name]) > 400
                assert final.reused_tokens + final.prefilled_tokens == final.prompt_tokens
                reused, prompted = reused + final.reused_tokens, prompted + final.prompt_tokens
            books[name] = prompt + final.tokens[:-1]
    assert lanes["a"] != lanes["b"]
    assert reused / prompted > 0.95
    books_match(engine)
