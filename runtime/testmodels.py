"""Test models made on the spot: Llama / Qwen2 model directories with seeded weights, a byte-level
BPE tokenizer, and a plain-torch reference forward pass over the same files.

Nothing is downloaded. ``write_model`` writes what an ExLlamaV2 (or any Hugging Face style) loader
reads: config.json, model.safetensors, tokenizer.json and tokenizer_config.json. Two kinds of
weights:

- ``"peaked"`` (the small test models): made with numpy, bit-identical on every machine, and built
  so that the greedy next token is clear (a large top-1 margin) while the logits still depend on
  the context through attention. A GPU run can then compare its fp16 logits with the fp32
  reference within a tolerance *and* expect the very greedy tokens the CPU tests checked.
- ``"random"`` (benchmark shapes such as Qwen2.5-Coder-1.5B or Llama-3-8B): N(0, 0.02), made with
  torch on the device asked for (seconds for 16 GB on a GPU), streamed to disk tensor by tensor.

The reference (``Reference``, ``reference_logits``) is a few dozen lines of torch in float32:
RMSNorm, RoPE in the Hugging Face "rotate_half" layout, grouped-query attention, a SiLU-gated MLP
and Qwen2's q/k/v biases. ``ReferenceBackend`` puts it behind the engine's backend interface, so
the GPU test suite can be dry-run on a CPU (``EXLSP_GPU_TEST_BACKEND=reference``).

Writer and reference live in one module on purpose: they must agree on every name and layout.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .backends.base import AbortCheck, BackendConfig
from .backends.exllamav2 import (
    BYTE_DECODER,
    added_tokens,
    base_vocab,
    find_special_tokens,
    piece_table,
    prefill,
)
from .types import SpecialTokens

# ---- shapes ----------------------------------------------------------------------------------------

ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}

# Special tokens per family, in id order after the base vocabulary (as the real vocabularies have
# them): (tokens, bos, eos). Qwen2 has no BOS of its own; its config names <|endoftext|> for both.
SPECIALS = {
    "llama": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>", "<|end_of_text|>",
    ),
    "qwen2": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
         "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"],
        "<|endoftext|>", "<|endoftext|>",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class ModelShape:
    arch: str = "llama"
    layers: int = 4
    hidden: int = 256
    heads: int = 8
    kv_heads: int = 2
    intermediate: int = 640
    vocab: int = 512  # rows of embed_tokens / lm_head (config.json vocab_size)
    tokenizer_vocab: int | None = None  # tokens the tokenizer knows; None: ``vocab``
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}: one of {sorted(ARCHS)}")
        if self.hidden % self.heads or self.heads % self.kv_heads or (self.hidden // self.heads) % 2:
            raise ValueError(f"{self}: hidden/heads must be an even head size, heads a multiple of kv_heads")
        if not 256 + len(SPECIALS[self.arch][0]) < self.n_tokens <= self.vocab:
            raise ValueError(f"{self}: the tokenizer needs more than 256 + specials tokens, at most vocab")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def n_tokens(self) -> int:
        return self.tokenizer_vocab or self.vocab

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every weight, in Hugging Face naming and file order."""
        h, hd, bias = self.hidden, self.head_dim, self.arch == "qwen2"
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            out.append((p + "input_layernorm.weight", (h,)))
            for name, rows in (("q", self.heads * hd), ("k", self.kv_heads * hd), ("v", self.kv_heads * hd)):
                out.append((f"{p}self_attn.{name}_proj.weight", (rows, h)))
                if bias:
                    out.append((f"{p}self_attn.{name}_proj.bias", (rows,)))
            out.append((p + "self_attn.o_proj.weight", (h, self.heads * hd)))
            out.append((p + "post_attention_layernorm.weight", (h,)))
            out.append((p + "mlp.gate_proj.weight", (self.intermediate, h)))
            out.append((p + "mlp.up_proj.weight", (self.intermediate, h)))
            out.append((p + "mlp.down_proj.weight", (h, self.intermediate)))
        out += [("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]
        return out

    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.tensors())


# The two small test models (a few MB), and real shapes for the GPU benchmark.
TEST_LLAMA = ModelShape("llama")
TEST_QWEN2 = ModelShape("qwen2", tokenizer_vocab=490)  # a head wider than the vocabulary, as in Qwen
QWEN25_CODER_1_5B = ModelShape(
    "qwen2", layers=28, hidden=1536, heads=12, kv_heads=2, intermediate=8960, vocab=151936,
    tokenizer_vocab=151665, rope_theta=1_000_000.0, max_position_embeddings=32768,
)  # fmt: skip
LLAMA3_8B = ModelShape(
    "llama", layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336, vocab=128256,
    rope_theta=500_000.0, rms_norm_eps=1e-5, max_position_embeddings=8192,
)  # fmt: skip
SHAPES = {
    "test-llama": TEST_LLAMA,
    "test-qwen2": TEST_QWEN2,
    "qwen2.5-coder-1.5b": QWEN25_CODER_1_5B,
    "llama-3-8b": LLAMA3_8B,
}


def config_json(shape: ModelShape, special_ids: dict[str, int]) -> dict[str, Any]:
    _, bos, eos = SPECIALS[shape.arch]
    config: dict[str, Any] = {
        "architectures": [ARCHS[shape.arch]],
        "model_type": shape.arch,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": shape.max_position_embeddings,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_theta": shape.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "vocab_size": shape.vocab,
        "bos_token_id": special_ids[bos],
        "eos_token_id": special_ids[eos],
        "torch_dtype": "float16",
        "initializer_range": 0.02,
    }
    if shape.arch == "llama":
        config.update(attention_bias=False, mlp_bias=False)
    else:  # Qwen2 has q/k/v biases by architecture; it never slides its window here
        config.update(use_sliding_window=False, sliding_window=shape.max_position_embeddings,
                      max_window_layers=shape.layers)  # fmt: skip
    return config


# ---- tokenizer -------------------------------------------------------------------------------------

# A fixed text the BPE merges are learnt from. Changing it changes every test model's tokenizer.
CORPUS = '''
def fibonacci(n):
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()

    def is_empty(self):
        return len(self.items) == 0


def read_lines(path, encoding="utf-8"):
    with open(path, encoding=encoding) as handle:
        for line in handle:
            yield line.rstrip("\\n")


for index, value in enumerate(range(10)):
    print(index, value * value)

import os
import sys
from pathlib import Path
from typing import Any, Sequence

def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv or sys.argv[1:])
    if not args:
        print("usage: tool FILE", file=sys.stderr)
        return 2
    total = 0
    for name in args:
        text = Path(name).read_text()
        total += len(text.splitlines())
    print(total)
    return 0

git checkout -b feature && git commit -am "fix the parser" && git push origin feature
ls -la /tmp | grep log; cat README.md; python3 -m pytest -q tests
The quick brown fox jumps over the lazy dog. Here is a long story about a dragon and a knight.
'''


def _byte_chars() -> list[str]:
    """The 256 byte-level characters, in byte order (id b spells byte b)."""
    by_byte = {b: c for c, b in BYTE_DECODER.items()}
    return [by_byte[b] for b in range(256)]


def bpe_merges(n_merges: int, corpus: str = CORPUS) -> list[tuple[str, str]]:
    """``n_merges`` byte-level BPE merges: the most frequent pairs of ``corpus`` first (ties by
    the pair itself, so the result is the same everywhere), then, once the corpus has no pair
    left that occurs twice, made-up pairs of existing tokens and single characters."""
    from tokenizers import pre_tokenizers

    words: dict[tuple[str, ...], int] = {}
    for word, _ in pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(corpus):
        words[tuple(word)] = words.get(tuple(word), 0) + 1
    tokens = _byte_chars()
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        counts: dict[tuple[str, str], int] = {}
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + n
        best = min(((-n, pair) for pair, n in counts.items() if n >= 2), default=None)
        if best is None:
            break
        a, b = best[1]
        merges.append((a, b))
        if a + b not in known:
            known.add(a + b)
            tokens.append(a + b)
        merged = {}
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    letters = [c for c in _byte_chars() if c.isalnum() or c in "_Ġ"]
    for a in tokens:  # grows while iterating: longer made-up tokens follow the shorter ones
        if len(merges) >= n_merges:
            break
        for b in letters:
            if a + b not in known:
                known.add(a + b)
                tokens.append(a + b)
                merges.append((a, b))
                if len(merges) >= n_merges:
                    break
    return merges


def build_tokenizer(n_tokens: int, specials: Sequence[str]) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` of exactly ``n_tokens`` ids: 256 bytes, merges,
    then ``specials`` (ids ``n_tokens - len(specials)`` on)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    n_base = n_tokens - len(specials)
    vocab = {c: i for i, c in enumerate(_byte_chars())}
    merges = []
    for a, b in bpe_merges(n_base - 256 + 64):  # spare merges: some repeat a token already made
        if len(vocab) >= n_base:
            break
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
    if len(vocab) != n_base:
        raise ValueError(f"could not make {n_base} base tokens (got {len(vocab)})")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if tok.get_vocab_size() != n_tokens:
        raise ValueError(f"tokenizer has {tok.get_vocab_size()} tokens, not {n_tokens}")
    return tok


def write_tokenizer(model_dir: Path, shape: ModelShape) -> dict[str, int]:
    """tokenizer.json and tokenizer_config.json; the special tokens' ids."""
    specials, bos, eos = SPECIALS[shape.arch]
    tok = build_tokenizer(shape.n_tokens, specials)
    tok.save(str(model_dir / "tokenizer.json"))
    ids = {s: tok.token_to_id(s) for s in specials}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": shape.max_position_embeddings,
        "bos_token": None if shape.arch == "qwen2" else bos,  # Qwen adds no BOS
        "eos_token": eos,
        "pad_token": eos,
        "add_bos_token": shape.arch == "llama",
        "added_tokens_decoder": {
            str(ids[s]): {"content": s, "special": True, "lstrip": False, "rstrip": False,
                          "normalized": False, "single_word": False}
            for s in specials
        },
    }  # fmt: skip
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return ids


def token_pieces(model_dir: Path) -> list[bytes]:
    """The bytes of every tokenizer id of a written model (as the backends decode them)."""
    data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    size = max([*base_vocab(data).values(), *added_tokens(data).values()]) + 1
    return piece_table(data, size)


# ---- safetensors -----------------------------------------------------------------------------------

DTYPES = {"float16": ("F16", np.float16, 2), "float32": ("F32", np.float32, 4)}


def write_safetensors(path: Path, tensors: Sequence[tuple[str, tuple[int, ...]]], dtype: str,
                      produce: Callable[[str, tuple[int, ...]], Any]) -> int:  # fmt: skip
    """Write a .safetensors file tensor by tensor (never all in memory): the header first, from
    the shapes, then ``produce(name, shape)`` for each (a numpy array or a torch tensor of
    ``dtype``). Returns the bytes of tensor data."""
    tag, _, size = DTYPES[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        n = math.prod(shape) * size
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in tensors:
            data = _as_bytes(produce(name, shape), dtype)
            if len(data) != math.prod(shape) * size:
                raise ValueError(f"{name}: {len(data)} bytes for shape {shape} in {dtype}")
            f.write(data)
    return offset


def _as_bytes(value: Any, dtype: str) -> bytes | memoryview:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value, dtype=DTYPES[dtype][1]).data.cast("B")
    import torch

    t = value.detach().to("cpu").contiguous().reshape(-1)  # a torch tensor already in ``dtype``
    if t.element_size() != DTYPES[dtype][2]:
        raise ValueError(f"a {t.dtype} tensor cannot be written as {dtype}")
    return t.view(torch.uint8).numpy().data


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as a numpy array (F16 and F32 only)."""
    kinds = {tag: np_type for tag, np_type, _ in DTYPES.values()}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=kinds[info["dtype"]]).reshape(info["shape"])
    return out


# ---- weights ---------------------------------------------------------------------------------------

# The peaked weights, as multiples of what keeps each layer's contribution near unit scale.
ATTN_GAIN = 0.7  # attention output vs the residual stream: the context's share of the logits
MLP_GAIN = 0.3
QK_GAIN = 1.6  # sharper attention patterns than a plain init
BIAS_STD = 0.5  # Qwen2's q/k/v biases: large enough that forgetting them shows
NORM_STD = 0.1  # norm weights 1 ± this: a loader that ignores them shows
HEAD_GAIN = 2.0  # the next-token map: logit ≈ HEAD_GAIN · sqrt(hidden) · cos(state, embedding)
HEAD_NOISE = 1.0  # a context-dependent part of every eligible logit


def successor_map(pieces: Sequence[bytes], n_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(next token for every id, the ids a model may emit). Only word-like tokens are emitted (no
    newline, bracket, quote or special token), so completions never end early and survive every
    post-processing step of the assistant."""
    allowed = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ ")
    eligible = np.array(
        [i for i, p in enumerate(pieces) if p and p.strip() and set(p) <= allowed], dtype=np.int64
    )
    return eligible[rng.integers(0, eligible.size, size=n_rows)], eligible


def peaked_weights(shape: ModelShape, pieces: Sequence[bytes], seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """The small test models' weights (float32 numpy, rounded to fp16 by the writer). Each
    token's embedding is a random direction; ``lm_head`` row j is a scaled sum of the embeddings
    of the tokens whose successor is j, plus noise, so the greedy token is mostly the successor
    of the current token, and the layers' attention moves the logits with the context."""
    rng = np.random.default_rng(seed)
    h, hd, v = shape.hidden, shape.head_dim, shape.vocab
    normal = rng.standard_normal

    embed = normal((v, h))
    yield "model.embed_tokens.weight", embed
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", 1 + NORM_STD * normal(h)
        for name, rows, gain in (("q", shape.heads * hd, QK_GAIN), ("k", shape.kv_heads * hd, QK_GAIN),
                                 ("v", shape.kv_heads * hd, 1.0)):  # fmt: skip
            yield f"{p}self_attn.{name}_proj.weight", normal((rows, h)) * gain / math.sqrt(h)
            if shape.arch == "qwen2":
                yield f"{p}self_attn.{name}_proj.bias", BIAS_STD * normal(rows)
        yield p + "self_attn.o_proj.weight", normal((h, shape.heads * hd)) * ATTN_GAIN / math.sqrt(shape.heads * hd)
        yield p + "post_attention_layernorm.weight", 1 + NORM_STD * normal(h)
        yield p + "mlp.gate_proj.weight", normal((shape.intermediate, h)) / math.sqrt(h)
        yield p + "mlp.up_proj.weight", normal((shape.intermediate, h)) / math.sqrt(h)
        yield p + "mlp.down_proj.weight", normal((h, shape.intermediate)) * MLP_GAIN / math.sqrt(shape.intermediate)
    yield "model.norm.weight", 1 + NORM_STD * normal(h)
    successor, eligible = successor_map(pieces, v, rng)
    unit = embed / np.linalg.norm(embed, axis=1, keepdims=True)
    head = np.zeros((v, h))
    np.add.at(head, successor[: shape.n_tokens], HEAD_GAIN * unit[: shape.n_tokens])
    head[eligible] += HEAD_NOISE * normal((eligible.size, h)) / math.sqrt(h)
    yield "lm_head.weight", head


def write_model(
    model_dir: str | os.PathLike[str], arch: str = "llama", *, layers: int = 4, hidden: int = 256,
    heads: int = 8, kv_heads: int = 2, intermediate: int = 640, vocab: int = 512, seed: int = 0,
    dtype: str = "float16", tokenizer_vocab: int | None = None, rope_theta: float | None = None,
    weights: str = "peaked", device: str | None = None,
) -> Path:  # fmt: skip
    """Write a model directory; returns its path. ``weights="peaked"`` (numpy, the test models) or
    ``"random"`` (N(0, 0.02); with torch on ``device`` when one is given, e.g. "cuda")."""
    shape = ModelShape(
        arch, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, intermediate=intermediate,
        vocab=vocab, tokenizer_vocab=tokenizer_vocab,
        **({"rope_theta": rope_theta} if rope_theta is not None else {}),
    )  # fmt: skip
    return write_shape(model_dir, shape, seed=seed, dtype=dtype, weights=weights, device=device)


def write_shape(model_dir: str | os.PathLike[str], shape: ModelShape, *, seed: int = 0, dtype: str = "float16",
                weights: str = "peaked", device: str | None = None) -> Path:  # fmt: skip
    path = Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    ids = write_tokenizer(path, shape)
    (path / "config.json").write_text(json.dumps(config_json(shape, ids), indent=2) + "\n")
    tensors = shape.tensors()
    if weights == "peaked":
        made = dict(peaked_weights(shape, token_pieces(path), seed))
        produce: Callable[[str, tuple[int, ...]], Any] = lambda name, _: made.pop(name)
    elif weights == "random" and device is not None:
        produce = _torch_random(seed, dtype, device)
    elif weights == "random":
        rng = np.random.default_rng(seed)
        produce = lambda name, shp: (np.ones(shp) if name.endswith("norm.weight") else 0.02 * rng.standard_normal(shp))
    else:
        raise ValueError(f"weights must be 'peaked' or 'random', not {weights!r}")
    write_safetensors(path / "model.safetensors", tensors, dtype, produce)
    return path


def _torch_random(seed: int, dtype: str, device: str) -> Callable[[str, tuple[int, ...]], Any]:
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    tdtype = getattr(torch, dtype)

    def produce(name: str, shape: tuple[int, ...]) -> Any:
        if name.endswith("norm.weight"):
            return torch.ones(shape, dtype=tdtype)
        return torch.randn(shape, generator=gen, device=device, dtype=tdtype).mul_(0.02)

    return produce


# ---- the reference forward pass --------------------------------------------------------------------


# How far an fp16 implementation's logits may stray from the fp32 reference on the test models
# (logits reach ±35). The reference itself run in fp16 stays within 0.03; a wrong causal mask,
# RoPE layout or base, or a missing Qwen2 bias moves the last logits by 1.6 or more.
LOGIT_TOLERANCE = 0.5
LOGIT_MEAN_TOLERANCE = 0.03


class Reference:
    """The model of a directory written here (or any small Llama/Qwen2 FP16/FP32 directory), in
    plain torch. Attributes to see what a wrong implementation would produce: ``causal`` (True;
    False: no mask; an int n: causal between chunks of n tokens but not inside them, what a
    chunked prefill without its mask computes), ``rope_style`` ("neox", Hugging Face's
    rotate_half; or "gptj"), ``use_bias``, ``theta``."""

    def __init__(self, model_dir: str | os.PathLike[str], *, device: str = "cpu", dtype: Any = None) -> None:
        import torch

        self.torch = torch
        path = Path(model_dir)
        self.config = cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg.get("num_key_value_heads", self.heads)
        self.head_dim = cfg.get("head_dim") or cfg["hidden_size"] // self.heads
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = float(cfg.get("rope_theta", 10000.0))
        self.causal, self.rope_style, self.use_bias = True, "neox", True
        self.device, self.dtype = device, dtype or torch.float32
        raw: dict[str, np.ndarray] = {}
        for file in sorted(path.glob("*.safetensors")):
            raw.update(read_safetensors(file))
        self.w = {k: torch.from_numpy(v.astype(np.float32)).to(device=device, dtype=self.dtype) for k, v in raw.items()}
        if "lm_head.weight" not in self.w:  # tied embeddings
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]

    def _norm(self, x: Any, weight: Any) -> Any:
        xf = x.float()
        return (xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(self.dtype) * weight

    def _linear(self, x: Any, prefix: str) -> Any:
        y = x @ self.w[prefix + ".weight"].T
        bias = self.w.get(prefix + ".bias")
        return y + bias if bias is not None and self.use_bias else y

    def _rope(self, x: Any, cos: Any, sin: Any) -> Any:
        if self.rope_style == "neox":  # pairs (i, i + d/2): the Hugging Face weight layout
            half = x.shape[-1] // 2
            rotated = self.torch.cat((-x[..., half:], x[..., :half]), dim=-1)
            return x * cos + rotated * sin
        pairs = x.unflatten(-1, (-1, 2))  # GPT-J: pairs (2i, 2i + 1)
        rotated = self.torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        c = cos[..., : x.shape[-1] // 2].repeat_interleave(2, -1)
        s = sin[..., : x.shape[-1] // 2].repeat_interleave(2, -1)
        return x * c + rotated * s

    def logits(self, ids: Sequence[int]) -> Any:
        """float32 logits [len(ids), vocab] for every position."""
        torch, w, hd = self.torch, self.w, self.head_dim
        with torch.no_grad():
            tokens = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)
            n = tokens.shape[0]
            x = w["model.embed_tokens.weight"][tokens]
            inv_freq = 1.0 / (self.theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
            angles = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)
            angles = torch.cat((angles, angles), dim=-1)
            cos = angles.cos().to(self.device, self.dtype)
            sin = angles.sin().to(self.device, self.dtype)
            mask = torch.zeros((n, n), device=self.device)
            if self.causal:
                mask = torch.full((n, n), float("-inf"), device=self.device).triu(1)
                if self.causal is not True:  # bidirectional inside each chunk
                    for begin in range(0, n, int(self.causal)):
                        mask[begin : begin + int(self.causal), begin : begin + int(self.causal)] = 0
            group = self.heads // self.kv_heads
            for i in range(self.layers):
                p = f"model.layers.{i}."
                h = self._norm(x, w[p + "input_layernorm.weight"])
                q = self._linear(h, p + "self_attn.q_proj").view(n, self.heads, hd).transpose(0, 1)
                k = self._linear(h, p + "self_attn.k_proj").view(n, self.kv_heads, hd).transpose(0, 1)
                v = self._linear(h, p + "self_attn.v_proj").view(n, self.kv_heads, hd).transpose(0, 1)
                q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
                k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
                scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(hd) + mask
                attn = (scores.softmax(-1).to(self.dtype) @ v).transpose(0, 1).reshape(n, self.heads * hd)
                x = x + self._linear(attn, p + "self_attn.o_proj")
                h = self._norm(x, w[p + "post_attention_layernorm.weight"])
                gate = torch.nn.functional.silu(self._linear(h, p + "mlp.gate_proj"))
                x = x + self._linear(gate * self._linear(h, p + "mlp.up_proj"), p + "mlp.down_proj")
            x = self._norm(x, w["model.norm.weight"])
            return (x @ w["lm_head.weight"].T).float()

    def greedy(self, ids: Sequence[int], n: int) -> tuple[list[int], list[float]]:
        """``n`` greedy tokens after ``ids`` and each one's top-1 margin (logit gap to the next)."""
        seq, out, margins = list(ids), [], []
        for _ in range(n):
            row = self.logits(seq)[-1]
            top = self.torch.topk(row, 2)
            out.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            seq.append(out[-1])
        return out, margins


def reference_logits(model_dir: str | os.PathLike[str], input_ids: Sequence[int], *, device: str = "cpu") -> Any:
    """float32 logits [len(input_ids), vocab] of the model in ``model_dir`` (a torch tensor)."""
    return Reference(model_dir, device=device).logits(input_ids)


# ---- the reference behind the backend interface -----------------------------------------------


class ReferenceBackend:
    """The torch reference as an engine backend (CPU or GPU): every eval recomputes the lane's
    whole sequence, which is slow but exact. Tokenization, special tokens and piece bytes follow
    the ExLlamaV2 backend, so a test written for one sees the same tokens on the other."""

    name = "reference"

    def __init__(self, model_dir: str | os.PathLike[str], config: BackendConfig = BackendConfig(),
                 *, device: str = "cpu") -> None:  # fmt: skip
        from tokenizers import Tokenizer

        from .backends.exllamav2 import fit_logits

        path = Path(model_dir)
        self._fit = fit_logits
        self._ref = Reference(path, device=device)
        data = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._plain = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._plain.encode_special_tokens = True
        cfg = self._ref.config
        self.special_tokens: SpecialTokens = find_special_tokens(
            added_tokens(data), bos=cfg.get("bos_token_id"), eos=cfg.get("eos_token_id"), vocab=base_vocab(data)
        )
        self._pieces = piece_table(data, max(self._tok.get_vocab_size(), len(base_vocab(data))))
        self.model_name = path.name
        self.vocab_size = len(self._pieces)
        self.n_lanes, self.n_ctx, self._n_batch = config.n_lanes, config.n_ctx, config.n_batch
        self._seqs: list[list[int]] = [[] for _ in range(self.n_lanes)]
        self._logits: list[np.ndarray | None] = [None] * self.n_lanes

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        ids = list((self._tok if special else self._plain).encode(text, add_special_tokens=False).ids)
        bos = self.special_tokens.bos
        return [bos, *ids] if add_bos and bos is not None else ids

    def token_bytes(self, token: int) -> bytes:
        return self._pieces[token] if 0 <= token < len(self._pieces) else b""

    def eval(self, lane: int, tokens: Sequence[int], start: int, should_abort: AbortCheck) -> int:
        seq = self._seqs[lane]
        if start > len(seq):
            raise ValueError(f"lane {lane} holds {len(seq)} tokens, not {start}")
        if start + len(tokens) > self.n_ctx:
            raise ValueError(f"lane {lane}: {start}+{len(tokens)} tokens exceed n_ctx {self.n_ctx}")
        self.truncate(lane, start)

        def forward(chunk: Sequence[int], last: bool) -> None:
            self._logits[lane] = None
            seq.extend(chunk)
            if last:
                row = self._ref.logits(seq)[-1].cpu().numpy()
                self._logits[lane] = self._fit(row, self.vocab_size)

        return prefill(forward, tokens, self._n_batch, should_abort)

    def logits(self, lane: int) -> np.ndarray:
        row = self._logits[lane]
        if row is None:
            raise RuntimeError(f"lane {lane} has no logits: its last eval did not finish")
        return row

    def truncate(self, lane: int, n: int) -> None:
        if n < len(self._seqs[lane]):
            del self._seqs[lane][max(0, n) :]
            self._logits[lane] = None

    def lane_length(self, lane: int) -> int:
        return len(self._seqs[lane])

    def memory_info(self) -> dict[str, Any]:
        return {"device": f"torch reference ({self._ref.device})", "lanes": self.n_lanes}

    def close(self) -> None:
        self._seqs = [[] for _ in range(self.n_lanes)]
        self._logits = [None] * self.n_lanes


__all__ = [
    "LLAMA3_8B", "LOGIT_MEAN_TOLERANCE", "LOGIT_TOLERANCE", "QWEN25_CODER_1_5B", "SHAPES", "TEST_LLAMA", "TEST_QWEN2", "ModelShape", "Reference",
    "ReferenceBackend", "build_tokenizer", "config_json", "read_safetensors", "reference_logits",
    "token_pieces", "write_model", "write_safetensors", "write_shape",
]  # fmt: skip
