"""The ExLlamaV2 backend on the FP16 test models: loading a model directory, special tokens,
tokenization, and an abort between prefill chunks. (Logits against the fp32 reference are in
test_gpu_reference.py, which runs last: with ``-x`` a numerical failure there leaves every
functional result of the run in place.)"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.gpu


def never() -> bool:
    return False


def prompt_ids(engine, text: str, n: int, start: int = 0) -> list[int]:
    ids = engine.backend.tokenize(text[start : start + 4 * n], add_bos=False, special=False)
    assert len(ids) >= n
    return ids[:n]


def test_loads_the_model_directory(engine, model_dirs, arch, gpu):
    backend = engine.backend
    assert backend.name == gpu.backend
    config = json.loads((model_dirs[arch] / "config.json").read_text())
    tokenizer = json.loads((model_dirs[arch] / "tokenizer.json").read_text())
    n_tokens = max(t["id"] for t in tokenizer["added_tokens"]) + 1
    assert backend.vocab_size == n_tokens <= config["vocab_size"]
    sp = backend.special_tokens
    assert sp.eos == config["eos_token_id"] and sp.eos in sp.end_of_generation
    if arch == "qwen2":
        assert sp.has_fim and sp.by_text["<|fim_middle|>"] == sp.fim_middle
        assert sp.eot == sp.by_text["<|im_end|>"]
    else:
        assert not sp.has_fim and sp.bos == config["bos_token_id"]
        assert sp.eot == sp.by_text["<|eot_id|>"]
    assert backend.memory_info()["lanes"] == 3


def test_tokens_round_trip(engine, model_dirs, arch, code_text):
    from tokenizers import Tokenizer

    backend = engine.backend
    text = code_text[:800]
    plain = Tokenizer.from_file(str(model_dirs[arch] / "tokenizer.json"))
    ids = backend.tokenize(text, add_bos=False, special=False)
    assert ids == plain.encode(text, add_special_tokens=False).ids
    assert b"".join(backend.token_bytes(t) for t in ids).decode() == text
    sp = backend.special_tokens
    eos_text = next(t for t, i in sp.by_text.items() if i == sp.eos)
    assert backend.tokenize(eos_text, add_bos=False, special=True) == [sp.eos]
    assert sp.eos not in backend.tokenize(eos_text, add_bos=False, special=False)


def test_abort_stops_prefill_between_chunks(engine, code_text):
    backend = engine.backend
    ids = prompt_ids(engine, code_text, 300)
    checks = []

    def abort_after_two_chunks() -> bool:
        checks.append(1)
        return len(checks) > 2

    assert backend.eval(0, ids, 0, abort_after_two_chunks) == 128
    with pytest.raises(RuntimeError):
        backend.logits(0)  # an unfinished eval leaves no logits
    assert backend.eval(0, ids[128:], 128, never) == 172
