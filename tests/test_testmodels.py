"""The test-model factory and its torch reference, on the CPU: the files an ExLlamaV2 loader reads,
seeded and byte-for-byte reproducible; a reference forward that is causal, peaked where it must
be and still context-dependent; a tolerance that tells fp16 noise from a wrong implementation.
The torch parts skip without torch; the exllamav2 parts run exllamav2's own Python with its CUDA
extension stubbed out, in a subprocess, and skip without exllamav2."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from exlsp.runtime import testmodels as tm

CODE = (Path(__file__).resolve().parents[1] / "runtime" / "engine.py").read_text(encoding="utf-8")
SHAPES = {"llama": tm.TEST_LLAMA, "qwen2": tm.TEST_QWEN2}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {arch: tm.write_shape(root / arch, shape) for arch, shape in SHAPES.items()}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", SHAPES)
def test_config_is_a_real_hf_config(written, arch):
    config = json.loads((written[arch] / "config.json").read_text())
    tokenizer = json.loads((written[arch] / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    shape = SHAPES[arch]
    assert config["architectures"] == [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"], config["vocab_size"]) == (
            256, 4, 8, 2, 640, 512)  # fmt: skip
    assert config["rope_theta"] == 10000.0 and config["rms_norm_eps"] == 1e-6
    assert config["tie_word_embeddings"] is False and config["max_position_embeddings"] == 4096
    bos, eos = {"llama": ("<|begin_of_text|>", "<|end_of_text|>"), "qwen2": ("<|endoftext|>", "<|endoftext|>")}[arch]
    assert config["bos_token_id"] == ids[bos] and config["eos_token_id"] == ids[eos]
    assert len(tokenizer["model"]["vocab"]) + len(ids) == shape.n_tokens == max(ids.values()) + 1
    tok_config = json.loads((written[arch] / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == eos
    assert {int(k): v["content"] for k, v in tok_config["added_tokens_decoder"].items()} == {i: t for t, i in ids.items()}


@pytest.mark.parametrize("arch", SHAPES)
def test_safetensors_hold_every_weight_in_hf_names(written, arch):
    path = written[arch] / "model.safetensors"
    tensors = tm.read_safetensors(path)
    assert list(tensors) == [name for name, _ in SHAPES[arch].tensors()]
    assert all(tensors[name].shape == shape and tensors[name].dtype == np.float16 for name, shape in SHAPES[arch].tensors())
    assert ("model.layers.0.self_attn.q_proj.bias" in tensors) == (arch == "qwen2")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    assert n % 8 == 0  # tensor data starts 8-aligned
    assert all(np.isfinite(t).all() for t in tensors.values())


def test_the_safetensors_library_reads_the_same(written):
    st = pytest.importorskip("safetensors.numpy")
    ours = tm.read_safetensors(written["qwen2"] / "model.safetensors")
    theirs = st.load_file(str(written["qwen2"] / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path, written):
    again = tm.write_shape(tmp_path / "again", tm.TEST_LLAMA)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        assert digest(again / name) == digest(written["llama"] / name), name
    other = tm.write_shape(tmp_path / "other", tm.TEST_LLAMA, seed=1)
    assert digest(other / "tokenizer.json") == digest(again / "tokenizer.json")
    assert digest(other / "model.safetensors") != digest(again / "model.safetensors")


@pytest.mark.parametrize("arch", SHAPES)
def test_tokenizer_round_trips_code(written, arch):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(written[arch] / "tokenizer.json"))
    text = CODE[:3000] + "\nünïcödé ✓ 🐉\n"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text
    pieces = tm.token_pieces(written[arch])
    assert b"".join(pieces[i] for i in ids).decode() == text
    assert len(ids) < 0.75 * len(text.encode())  # merges were learnt: fewer tokens than bytes
    special = "<|endoftext|>" if arch == "qwen2" else "<|eot_id|>"
    assert tok.encode(special, add_special_tokens=False).ids == [tok.token_to_id(special)]


@pytest.mark.parametrize("arch", SHAPES)
def test_only_word_like_tokens_can_be_emitted(written, arch):
    head = tm.read_safetensors(written[arch] / "model.safetensors")["lm_head.weight"].astype(np.float32)
    pieces = tm.token_pieces(written[arch])
    live = np.flatnonzero(np.abs(head).sum(axis=1) > 0)
    assert len(live) > 100
    for token in live:
        assert pieces[token].strip() and b"\n" not in pieces[token] and not pieces[token].startswith(b"<|"), token
    assert not np.abs(head[SHAPES[arch].n_tokens :]).any()  # the padding rows of a wider head


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="unknown arch"):
        tm.ModelShape("gpt2")
    with pytest.raises(ValueError, match="head size"):
        tm.ModelShape(heads=6, kv_heads=4)
    with pytest.raises(ValueError, match="tokenizer"):
        tm.ModelShape(vocab=200)


def test_random_weights_without_a_device(tmp_path):
    path = tm.write_model(tmp_path / "r", "qwen2", layers=1, hidden=64, heads=4, kv_heads=1, intermediate=96,
                          vocab=320, weights="random", dtype="float32")  # fmt: skip
    tensors = tm.read_safetensors(path / "model.safetensors")
    assert tensors["model.norm.weight"].dtype == np.float32 and (tensors["model.norm.weight"] == 1).all()
    assert 0.015 < tensors["lm_head.weight"].std() < 0.025
    assert json.loads((path / "config.json").read_text())["num_key_value_heads"] == 1


def test_merges_are_reproducible_and_fill_any_vocabulary():
    assert tm.bpe_merges(300) == tm.bpe_merges(300)
    tok = tm.build_tokenizer(20_000, ["<|endoftext|>"])
    assert tok.get_vocab_size() == 20_000 and tok.token_to_id("<|endoftext|>") == 19_999


# ---- the reference ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def refs(written, torch):
    return {arch: tm.Reference(path) for arch, path in written.items()}


def code_ids(path: Path, n: int, start: int = 0) -> list[int]:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(path / "tokenizer.json")).encode(CODE[start : start + 4 * n]).ids
    return ids[:n]


@pytest.mark.parametrize("arch", SHAPES)
def test_reference_shapes_and_determinism(written, refs, arch, torch):
    ids = code_ids(written[arch], 50)
    logits = refs[arch].logits(ids)
    assert logits.shape == (50, 512) and logits.dtype == torch.float32
    assert torch.equal(logits, tm.reference_logits(written[arch], ids))


@pytest.mark.parametrize("arch", SHAPES)
def test_reference_is_causal(written, refs, arch, torch):
    ids = code_ids(written[arch], 60)
    changed = ids[:40] + code_ids(written[arch], 20, start=4000)
    a, b = refs[arch].logits(ids), refs[arch].logits(changed)
    assert torch.allclose(a[:40], b[:40], atol=1e-5)
    assert (a[40:] - b[40:]).abs().max() > 1.0


@pytest.mark.parametrize("arch", SHAPES)
def test_logits_are_peaked_and_still_depend_on_the_context(written, refs, arch, torch):
    ids = code_ids(written[arch], 300)
    logits = refs[arch].logits(ids)
    top = torch.topk(logits, 2, dim=-1).values
    margins = top[:, 0] - top[:, 1]
    assert margins.median() > 8 and (margins > 2 * tm.LOGIT_TOLERANCE).float().mean() > 0.99
    alone = torch.stack([refs[arch].logits([t])[-1] for t in ids[-50:]])
    moved = (logits[-50:] - alone).abs().max(dim=-1).values
    assert moved.min() > 4 * tm.LOGIT_TOLERANCE  # attention matters everywhere, visibly


@pytest.mark.parametrize("arch", SHAPES)
def test_greedy_generation_is_stable(written, refs, arch):
    for start in (0, 1200, 4000):
        ids = code_ids(written[arch], 200, start=start)
        tokens, margins = refs[arch].greedy(ids, 24)
        assert refs[arch].greedy(ids, 24)[0] == tokens
        assert min(margins) > 4 * tm.LOGIT_TOLERANCE
        assert len(set(tokens)) > 5  # not stuck on one token


@pytest.mark.parametrize("arch", SHAPES)
def test_tolerance_tells_fp16_noise_from_wrong_implementations(written, refs, arch, torch):
    ids = code_ids(written[arch], 300)
    want = refs[arch].logits(ids)
    fp16 = tm.Reference(written[arch], dtype=torch.float16).logits(ids)
    assert (fp16 - want).abs().max() < tm.LOGIT_TOLERANCE / 5
    assert (fp16 - want).abs().mean() < tm.LOGIT_MEAN_TOLERANCE / 5
    wrong = [("causal", 64), ("causal", False), ("rope_style", "gptj"), ("theta", 20000.0)]
    if arch == "qwen2":
        wrong.append(("use_bias", False))
    for attr, value in wrong:
        ref = tm.Reference(written[arch])
        setattr(ref, attr, value)
        last = (ref.logits(ids)[-1] - want[-1]).abs().max()
        assert last > 3 * tm.LOGIT_TOLERANCE, f"{attr}={value}: only {last:.2f}"


async def test_reference_backend_runs_the_engine(written, torch):
    from exlsp.runtime import BackendConfig, Engine, GenerationRequest

    backend = tm.ReferenceBackend(written["qwen2"], BackendConfig(n_lanes=2, n_ctx=512, n_batch=32))
    engine = Engine(backend)
    try:
        assert backend.special_tokens.has_fim and backend.vocab_size == 490
        prompt = CODE[:300]
        first = await engine.complete(GenerationRequest(prompt=prompt, max_tokens=8, stop_at_eos=False))
        warm = await engine.complete(GenerationRequest(prompt=prompt + " x", max_tokens=8, stop_at_eos=False))
        cold = await engine.complete(
            GenerationRequest(prompt=prompt + " x", max_tokens=8, stop_at_eos=False, reuse_cache=False)
        )
        assert first.generated_tokens == 8 and warm.reused_tokens > 50 and warm.tokens == cold.tokens
        ids = backend.tokenize(prompt + " x", add_bos=True, special=True)
        assert warm.tokens == tm.Reference(written["qwen2"]).greedy(ids, 8)[0]
    finally:
        engine.close()


# ---- exllamav2's own Python on these files (its CUDA extension stubbed) ----------------------------

STUB = """
import sys, types, torch
class _Ext(types.ModuleType):
    def __getattr__(self, name):
        def call(*a, **k):
            raise RuntimeError("stub: ext_c." + name)
        return call
ext = types.ModuleType("exllamav2.ext")
ext.exllamav2_ext = _Ext("exllamav2_ext")
ext.none_tensor = torch.empty((1, 1), device="meta")
sys.modules["exllamav2.ext"] = ext
"""


def run_with_stubbed_exllamav2(script: str) -> str:
    for module in ("torch", "exllamav2", "rich", "PIL"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (exllamav2 imports it)")
    proc = subprocess.run([sys.executable, "-c", STUB + textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # exllamav2 prints warnings of its own on stdout: the script's answers are marked
    return "\n".join(line[4:] for line in proc.stdout.splitlines() if line.startswith("OUT "))


def test_exllamav2_reads_the_test_models(written):
    out = run_with_stubbed_exllamav2(f"""
        import json
        from exllamav2 import ExLlamaV2, ExLlamaV2Config, ExLlamaV2Tokenizer
        for arch, path in {json.dumps({k: str(v) for k, v in written.items()})}.items():
            config = ExLlamaV2Config(path)
            config.arch_compat_overrides(quiet=True)
            tok = ExLlamaV2Tokenizer(config)
            model = ExLlamaV2(config)
            attn = model.modules[1]
            print("OUT", json.dumps({{"arch": arch, "architecture": config.architecture, "vocab": config.vocab_size,
                "head_dim": config.head_dim, "kv_heads": config.num_key_value_heads, "bias": attn.q_proj.has_bias,
                "bos": tok.bos_token_id, "eos": tok.eos_token_id, "size": tok.get_vocab_size(),
                "modules": len(model.modules), "padding": model.modules[-1].padding,
                "encoded": tok.encode("x<|im_end|>", encode_special_tokens=True).tolist()[0]}}))
    """)
    got = {d["arch"]: d for d in map(json.loads, out.strip().splitlines())}
    assert got["llama"]["architecture"] == "LlamaForCausalLM" and got["llama"]["bias"] is False
    assert got["qwen2"]["architecture"] == "Qwen2ForCausalLM" and got["qwen2"]["bias"] is True
    for arch, d in got.items():
        config = json.loads((written[arch] / "config.json").read_text())
        assert (d["vocab"], d["head_dim"], d["kv_heads"], d["padding"]) == (512, 32, 2, 0)
        assert (d["bos"], d["eos"]) == (config["bos_token_id"], config["eos_token_id"])
        assert d["size"] == SHAPES[arch].n_tokens and d["modules"] == 1 + 2 * 4 + 2
    assert len(got["qwen2"]["encoded"]) == 2  # <|im_end|> is one special token


def test_exllamav2_0_3_2_prefill_attention_is_not_causal_without_no_sdpa():
    """Why the ExLlamaV2 backend must set ``config.no_sdpa``: without flash-attn, exllamav2 0.3.2's
    ``_attn_torch`` passes no mask to SDPA (its block-diagonal mask is None for ordinary prompts),
    so inside a multi-token forward pass every position sees the later ones. The matmul path
    (``no_sdpa``) applies the causal mask. Decoding one token at a time is not affected."""
    out = run_with_stubbed_exllamav2("""
        import types, torch
        import torch.nn.functional as F
        import exllamav2
        from exllamav2.attn import ExLlamaV2Attention
        from exllamav2.attn_params import Params
        torch.manual_seed(0)
        q, k, v = (torch.randn(1, 6, 2, 8) for _ in range(3))
        attn = types.SimpleNamespace(num_key_value_groups=1, sliding_window=0, layer_idx=0, scaling=8 ** -0.5,
                                     repeat_kv=lambda x, n: x)
        causal = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True).transpose(1, 2)
        for no_sdpa in (False, True):
            cfg = types.SimpleNamespace(no_sdpa=no_sdpa, attn_logit_softcapping=None)
            dtype = torch.float16 if no_sdpa else torch.float32
            out = ExLlamaV2Attention._attn_torch(attn, 1, 6, q.to(dtype), k.to(dtype), v.to(dtype), Params(1, 6, 0, None, None), cfg)
            print("OUT", exllamav2.__version__, no_sdpa, float((out.view(1, 6, 2, 8).float() - causal).abs().max()))
    """)
    rows = [line.split() for line in out.strip().splitlines()]
    if rows[0][0] != "0.3.2":
        pytest.skip(f"exllamav2 {rows[0][0]}: this documents 0.3.2")
    assert float(rows[0][2]) > 0.5  # SDPA: not causal
    assert float(rows[1][2]) < 0.01  # matmul path (no_sdpa): causal
