"""The ExLlamaV2 backend's logits against the fp32 torch reference on the FP16 test models: after a
prefill in chunks, while decoding token by token, after a truncation, and greedy generation."""

from __future__ import annotations

import pytest

from exlsp.runtime import GenerationRequest

pytestmark = pytest.mark.gpu


def never() -> bool:
    return False


def prompt_ids(engine, text: str, n: int, start: int = 0) -> list[int]:
    ids = engine.backend.tokenize(text[start : start + 4 * n], add_bos=False, special=False)
    assert len(ids) >= n
    return ids[:n]


def prefill_hint(engine) -> str:
    """Why a prefill may be wrong while decoding is right, for the failure message."""
    import importlib.util

    model = getattr(engine.backend, "_model", None)
    if model is None or importlib.util.find_spec("flash_attn") is not None:
        return ""
    if getattr(model.config, "no_sdpa", False):
        return " (config.no_sdpa is set: the matmul attention path was used)"
    return (" -- exllamav2 0.3.2 without flash-attn runs prefill attention through SDPA with no causal"
            " mask (attn.py _attn_torch); the backend must set config.no_sdpa = True")


def test_prefill_in_chunks_matches_the_reference(engine, reference, code_text, compare):
    """300 tokens through chunks of 64: the logits the reference computes, at the end and at and
    across chunk boundaries. A prefill whose attention is not causal inside a chunk fails here
    (exllamav2 0.3.2 runs SDPA without a mask unless its config sets no_sdpa)."""
    backend = engine.backend
    ids = prompt_ids(engine, code_text, 300)
    want = reference.logits(ids)
    hint = prefill_hint(engine)
    for n in (1, 64, 65, 130, 300):
        backend.truncate(1, 0)
        assert backend.eval(1, ids[:n], 0, never) == n
        compare(backend.logits(1), want[n - 1], f"after a {n}-token prefill{hint}")


def test_decoding_token_by_token_matches_the_reference(engine, reference, code_text, compare):
    backend = engine.backend
    ids = prompt_ids(engine, code_text, 48, start=500)
    want = reference.logits(ids)
    for i, token in enumerate(ids):
        assert backend.eval(2, [token], i, never) == 1
        compare(backend.logits(2), want[i], f"decoding position {i}")


def test_truncate_then_a_different_continuation(engine, reference, code_text, compare):
    """Positions past a truncation are forgotten: a lane cut at 120 tokens and continued with
    other text gives the logits of the new sequence alone."""
    backend = engine.backend
    ids = prompt_ids(engine, code_text, 200)
    other = prompt_ids(engine, code_text, 40, start=3000)
    assert backend.eval(0, ids, 0, never) == 200
    backend.truncate(0, 120)
    assert backend.eval(0, other, 120, never) == 40
    compare(backend.logits(0), reference.logits(ids[:120] + other)[-1], f"after truncate + new text{prefill_hint(engine)}")
    with pytest.raises(ValueError):
        backend.eval(0, [1], 500, never)  # past the lane's end


async def test_greedy_generation_matches_the_reference(engine, reference, code_text, gpu):
    ids = prompt_ids(engine, code_text, 200, start=1200)
    want, margins = reference.greedy(ids, 24)
    assert min(margins) > gpu.safe_margin, f"the test model is not peaked enough here ({min(margins):.2f})"
    final = await engine.complete(GenerationRequest(prompt=ids, max_tokens=24, stop_at_eos=False, add_bos=False))
    assert final.stop_reason == "length" and final.tokens == want
