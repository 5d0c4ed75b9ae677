"""The ExLlamaV2 backend: an EXL2/GPTQ model directory on a CUDA GPU, one KV cache per lane.

The engine drives the token loop, so this uses exllamav2's low-level ``model.forward`` on plain
``ExLlamaV2Cache`` objects, never its dynamic generator. ``import exllamav2`` JIT-compiles a CUDA
extension (minutes) and prints to stdout, so nothing here imports it before ``available()`` has
seen a CUDA device, and the import and load run inside ``stdout_to_stderr()``.

Everything that needs neither torch nor exllamav2 (model directory checks, special-token
detection, token piece bytes, prefill chunking, logits fitting) is a plain function, tested on
machines without a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailable, ModelError
from ..types import SpecialTokens
from .base import AbortCheck, BackendConfig, ProgressCallback

INSTALL_HINT = "pip install 'exlsp[gpu]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available() -> tuple[bool, str]:
    """(True, "") when this machine can run the backend, else (False, why not)."""
    if not _installed("torch"):
        return False, "torch is not installed (install a CUDA build of torch first)"
    try:
        with stdout_to_stderr():
            import torch
    except Exception as exc:  # a broken CUDA install fails in many ways
        return False, f"torch cannot be imported: {exc}"
    if not torch.cuda.is_available():
        return False, "no CUDA device (torch.cuda.is_available() is false)"
    for module in ("exllamav2", "tokenizers"):
        if not _installed(module):
            return False, f"{module} is not installed: {INSTALL_HINT}"
    return True, ""


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to fd 1 (Python, C stdio, child processes such as a compiler) to
    fd 2 until the block ends. Process-wide: nothing may write protocol messages meanwhile."""
    _flush_all()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        _flush_all()  # Python's and C's stdio buffers hold what was written while fd 1 was fd 2
        os.dup2(saved, 1)
        os.close(saved)


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


# --- model directory -----------------------------------------------------------------------------


def read_model_dir(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """config.json and tokenizer.json of ``path``, or a ModelError naming what is wrong."""
    if not path.is_dir():
        raise ModelError(f"{path} is not a directory: an ExLlamaV2 model is a model directory")
    parsed = []
    for name in ("config.json", "tokenizer.json"):
        file = path / name
        if not file.is_file():
            extra = " (exllamav2 0.3 needs it; tokenizer.model alone is not enough)"
            raise ModelError(f"{path} has no {name}{extra if name == 'tokenizer.json' else ''}")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelError(f"{file} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise ModelError(f"{file} cannot be read: it is not a JSON object")
        parsed.append(data)
    return parsed[0], parsed[1]


# --- special tokens ------------------------------------------------------------------------------

# Checked in order; the first one present that differs from EOS ends a turn (Qwen instruct has
# eos <|im_end|> and eot <|endoftext|>, Qwen base the other way round).
EOT_NAMES = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|EOT|>", "<|end|>", "<EOT>", "▁<EOT>")

# Per family: prefix, suffix, middle, pad, repo, sep; " " separates spellings seen in released
# vocabularies (CodeLlama's sit in the SentencePiece vocab with a leading "▁").
FIM_SLOTS = ("prefix", "suffix", "middle", "pad", "repo", "sep")
FIM_FAMILIES = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|repo_name|>",
     "<|file_sep|>"),  # Qwen2.5-Coder
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<repo_name> <reponame>",
     "<file_sep>"),  # StarCoder, StarCoder2
    ("<PRE> ▁<PRE>", "<SUF> ▁<SUF>", "<MID> ▁<MID>"),  # CodeLlama
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    ("[PREFIX]", "[SUFFIX]", "[MIDDLE]"),  # Codestral
)  # fmt: skip


def find_special_tokens(
    added: Mapping[str, int], *, bos: int | None, eos: int | None,
    vocab: Mapping[str, int] | None = None,
) -> SpecialTokens:  # fmt: skip
    """SpecialTokens from the added/special tokens (text -> id). ``vocab`` (the base vocabulary)
    is searched as well for EOT and FIM names; the ones found there join ``by_text``."""
    by_text = dict(added)

    def lookup(names: str) -> int | None:
        for name in names.split(" "):
            token = by_text.get(name)
            if token is None and vocab is not None and name in vocab:
                token = by_text[name] = vocab[name]
            if token is not None:
                return token
        return None

    eot = next((t for n in EOT_NAMES if (t := lookup(n)) is not None and t != eos), None)
    fim: dict[str, int | None] = {}
    for family in FIM_FAMILIES:
        ids = dict(zip(FIM_SLOTS, map(lookup, family)))
        if None not in (ids["prefix"], ids["suffix"], ids["middle"]):
            fim = ids
            break
    return SpecialTokens(
        bos=bos, eos=eos, eot=eot,
        fim_prefix=fim.get("prefix"), fim_suffix=fim.get("suffix"), fim_middle=fim.get("middle"),
        fim_pad=fim.get("pad"), fim_repo=fim.get("repo"), fim_sep=fim.get("sep"),
        by_text=by_text,
    )  # fmt: skip


def added_tokens(tokenizer_json: Mapping[str, Any]) -> dict[str, int]:
    return {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens") or ()}


def base_vocab(tokenizer_json: Mapping[str, Any]) -> dict[str, int]:
    vocab = (tokenizer_json.get("model") or {}).get("vocab") or {}
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...], the id is the index
        return {entry[0]: i for i, entry in enumerate(vocab)}
    return dict(vocab)


# --- token bytes ---------------------------------------------------------------------------------


def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: byte-level BPE spells each byte as a printable char."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {b: b for b in printable}
    shifted = 256
    for b in range(256):
        if b not in chars:
            chars[b] = shifted
            shifted += 1
    return {chr(c): b for b, c in chars.items()}


BYTE_DECODER = _gpt2_byte_decoder()
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _component_types(component: Any) -> set[str]:
    """Types of a tokenizer.json decoder/pre-tokenizer, looking inside Sequences."""
    if not isinstance(component, dict):
        return set()
    types = {component.get("type", "")}
    for key in ("decoders", "pretokenizers"):
        for child in component.get(key) or ():
            types |= _component_types(child)
    return types


def piece_style(tokenizer_json: Mapping[str, Any]) -> str:
    """How vocabulary pieces spell bytes: "byte_level" (GPT-2 style, Ġ for space),
    "sentencepiece" (▁ for space, <0xNN> byte fallback) or "plain"."""
    decoder = _component_types(tokenizer_json.get("decoder"))
    if "ByteLevel" in decoder or (
        not decoder and "ByteLevel" in _component_types(tokenizer_json.get("pre_tokenizer"))
    ):
        return "byte_level"
    model = tokenizer_json.get("model") or {}
    if decoder & {"Metaspace", "ByteFallback", "Replace"} or model.get("byte_fallback"):
        return "sentencepiece"
    return "plain"


def piece_bytes(piece: str, style: str) -> bytes:
    """The bytes a vocabulary piece stands for (possibly part of a UTF-8 character)."""
    if style == "byte_level":
        try:
            return bytes(BYTE_DECODER[c] for c in piece)
        except KeyError:  # not byte-level spelled after all
            return piece.encode("utf-8")
    if style == "sentencepiece":
        if m := _BYTE_FALLBACK.fullmatch(piece):
            return bytes((int(m.group(1), 16),))
        return piece.replace("▁", " ").encode("utf-8")
    return piece.encode("utf-8")


def piece_table(
    tokenizer_json: Mapping[str, Any], size: int, extra: Mapping[int, str] | None = None
) -> list[bytes]:
    """Bytes of every token id below ``size``. Added tokens are stored as their literal text, not
    spelled as pieces; ``extra`` (id -> text) fills ids tokenizer.json does not name.

    SentencePiece decoders strip the first space of a whole text; per token that cannot be known,
    so "▁hello" is b" hello" everywhere (as llama.cpp's token_to_piece)."""
    style = piece_style(tokenizer_json)
    table = [b""] * size
    for piece, token in base_vocab(tokenizer_json).items():
        if 0 <= token < size:
            table[token] = piece_bytes(piece, style)
    for text, token in added_tokens(tokenizer_json).items():
        if 0 <= token < size:
            table[token] = text.encode("utf-8")
    for token, text in (extra or {}).items():
        if 0 <= token < size and not table[token]:
            table[token] = text.encode("utf-8")
    return table


# --- evaluation ----------------------------------------------------------------------------------


def batches(n: int, n_batch: int) -> Iterator[tuple[int, int]]:
    """[begin, end) spans of at most ``n_batch`` covering 0..n."""
    step = max(1, n_batch)
    for begin in range(0, n, step):
        yield begin, min(begin + step, n)


def prefill(
    forward: Callable[[Sequence[int], bool], None], tokens: Sequence[int], n_batch: int,
    should_abort: AbortCheck,
) -> int:  # fmt: skip
    """Feed ``tokens`` to ``forward(chunk, is_last)`` chunk by chunk; abort is checked before each
    chunk. Returns how many tokens were fed."""
    for begin, end in batches(len(tokens), n_batch):
        if should_abort():
            return begin
        forward(tokens[begin:end], end == len(tokens))
    return len(tokens)


def fit_logits(row: Any, vocab_size: int) -> np.ndarray:
    """float32 logits of exactly ``vocab_size``. The model head is often wider than the tokenizer
    (untrained rows, exllamav2's padding to 32): those ids must never be sampled, so they are cut;
    a narrower head is padded with -inf."""
    row = np.asarray(row, dtype=np.float32).reshape(-1)
    if row.shape[0] >= vocab_size:
        return np.ascontiguousarray(row[:vocab_size])
    return np.concatenate([row, np.full(vocab_size - row.shape[0], -np.inf, dtype=np.float32)])


# --- the backend ---------------------------------------------------------------------------------


class ExLlamaV2Backend:
    name = "exllamav2"

    def __init__(
        self, *, model_name: str, model: Any, caches: list[Any], tokenizer: Any,
        plain_tokenizer: Any, pieces: list[bytes], special_tokens: SpecialTokens,
        n_ctx: int, n_batch: int, torch: Any = None,
    ) -> None:  # fmt: skip
        self.model_name = model_name
        self.n_lanes = len(caches)
        self.n_ctx = n_ctx
        self.vocab_size = len(pieces)
        self.special_tokens = special_tokens
        self._model = model
        self._caches = caches
        self._tokenizer = tokenizer
        self._plain_tokenizer = plain_tokenizer
        self._pieces = pieces
        self._n_batch = n_batch
        self._torch = torch
        self._logits: list[np.ndarray | None] = [None] * len(caches)

    @classmethod
    def load(
        cls, path: Path, config: BackendConfig, progress: ProgressCallback | None = None
    ) -> ExLlamaV2Backend:
        ok, reason = available()
        if not ok:
            raise BackendUnavailable(f"the exllamav2 backend cannot run here: {reason}")
        path = Path(path)
        _, tokenizer_json = read_model_dir(path)
        import torch  # already imported by available()

        threads = torch.get_num_threads()
        try:
            with stdout_to_stderr():
                model, caches, tokenizer, plain = _load_model(path, config, progress, torch)
        finally:
            torch.set_num_threads(threads)  # import exllamav2 sets 1 for the whole process
        vocab = base_vocab(tokenizer_json)
        extended = {t: i for t, i in tokenizer.extended_piece_to_id.items() if i is not None}
        special = find_special_tokens(
            {**extended, **added_tokens(tokenizer_json)},
            bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id, vocab=vocab,
        )  # fmt: skip
        size = max(tokenizer.get_vocab_size(), len(vocab))
        backend = cls(
            model_name=path.name, model=model, caches=caches, tokenizer=tokenizer,
            plain_tokenizer=plain, special_tokens=special, n_ctx=config.n_ctx,
            pieces=piece_table(tokenizer_json, size, tokenizer.extended_id_to_piece),
            n_batch=config.n_batch, torch=torch,
        )  # fmt: skip
        if progress is not None:
            progress(1.0)
        return backend

    # Tokenizer

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        if special:
            ids = self._tokenizer.encode(text, add_bos=add_bos, encode_special_tokens=True)
            return [int(t) for t in ids[0].tolist()]
        # exllamav2's encode_special_tokens=False does not stop the HF tokenizer from matching
        # "<|endoftext|>" in user text; only a tokenizer with encode_special_tokens set does.
        ids = self._plain_tokenizer.encode(text, add_special_tokens=False).ids
        bos = self.special_tokens.bos
        return [bos, *ids] if add_bos and bos is not None else list(ids)

    def token_bytes(self, token: int) -> bytes:
        return self._pieces[token] if 0 <= token < len(self._pieces) else b""

    # KV cache lanes

    def eval(self, lane: int, tokens: Sequence[int], start: int, should_abort: AbortCheck) -> int:
        cache = self._caches[lane]
        if start > cache.current_seq_len:
            raise ValueError(f"lane {lane} holds {cache.current_seq_len} tokens, not {start}")
        if start + len(tokens) > self.n_ctx:
            raise ValueError(f"lane {lane}: {start}+{len(tokens)} tokens exceed n_ctx {self.n_ctx}")
        self.truncate(lane, start)

        def forward(chunk: Sequence[int], last: bool) -> None:
            self._logits[lane] = None  # stale from the first chunk on, until the last one lands
            row = self._forward(lane, chunk, last)
            if last:
                self._logits[lane] = fit_logits(row, self.vocab_size)

        return prefill(forward, tokens, self._n_batch, should_abort)

    def _forward(self, lane: int, chunk: Sequence[int], last: bool) -> Any:
        """One model.forward on the lane's cache (which advances by len(chunk)); the last token's
        logits row when ``last``."""
        torch = self._torch
        ids = torch.tensor([list(chunk)], dtype=torch.long)
        cache = self._caches[lane]
        if not last:
            self._model.forward(ids, cache, preprocess_only=True)
            return None
        out = self._model.forward(ids, cache, last_id_only=True)  # [1, 1, padded vocab], fp16
        return out[0, -1].float().cpu().numpy()

    def logits(self, lane: int) -> np.ndarray:
        row = self._logits[lane]
        if row is None:
            raise RuntimeError(f"lane {lane} has no logits: its last eval did not finish")
        return row

    def truncate(self, lane: int, n: int) -> None:
        cache = self._caches[lane]
        if n < cache.current_seq_len:
            cache.current_seq_len = max(0, n)
            self._logits[lane] = None

    def memory_info(self) -> dict[str, Any]:
        cuda = self._torch.cuda
        return {
            "device": cuda.get_device_name(),
            "vram_allocated_mb": round(cuda.memory_allocated() / 2**20, 1),
            "vram_reserved_mb": round(cuda.memory_reserved() / 2**20, 1),
            "lanes": self.n_lanes,
        }

    def close(self) -> None:
        model, self._model = self._model, None
        self._caches = []
        self._logits = [None] * self.n_lanes
        if model is None:
            return
        with contextlib.suppress(Exception):
            model.unload()
        del model
        gc.collect()
        if self._torch is not None:
            self._torch.cuda.empty_cache()


def _load_model(
    path: Path, config: BackendConfig, progress: ProgressCallback | None, torch: Any
) -> tuple[Any, list[Any], Any, Any]:
    """exllamav2's model, one cache per lane, its tokenizer and a tokenizer for plain text."""
    try:
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from tokenizers import Tokenizer
    except Exception as exc:  # most often its CUDA extension failing to compile
        raise BackendUnavailable(f"exllamav2 cannot be imported: {exc}") from exc
    try:
        ex_config = ExLlamaV2Config(str(path))
        ex_config.max_seq_len = config.n_ctx
        ex_config.arch_compat_overrides()
        # 0.3.2 without flash-attn runs prefill through SDPA with no causal mask: every prompt
        # position would see the later ones (found against the torch reference on the test models).
        ex_config.no_sdpa = True
        tokenizer = ExLlamaV2Tokenizer(ex_config)
        plain = Tokenizer.from_file(str(path / "tokenizer.json"))
        plain.encode_special_tokens = True  # see ExLlamaV2Backend.tokenize
        model = ExLlamaV2(ex_config)
    except Exception as exc:
        raise ModelError(f"{path} is not a loadable ExLlamaV2 model: {exc}") from exc

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(0.95 * done / max(total, 1))  # 1.0 once the backend is ready

    try:
        first = ExLlamaV2Cache(model, max_seq_len=config.n_ctx, lazy=True)
        # last_id_only: the split's trial forward then sizes the head output for one position,
        # the only one eval() ever asks for, instead of max_input_len positions.
        model.load_autosplit(first, last_id_only=True, callback=report)
        # A lazy cache gets its tensors only inside load_autosplit; the other lanes' caches are
        # allocated now, on the devices the split chose (model.cache_map).
        rest = [ExLlamaV2Cache(model, max_seq_len=config.n_ctx) for _ in range(config.n_lanes - 1)]
    except Exception as exc:
        with contextlib.suppress(Exception):
            model.unload()
        gc.collect()
        torch.cuda.empty_cache()
        hint = ""
        if "memory" in str(exc).lower() or "VRAM" in str(exc):
            hint = f" (try fewer lanes than {config.n_lanes} or a context below {config.n_ctx})"
        raise ModelError(f"cannot load {path} with exllamav2: {exc}{hint}") from exc
    return model, [first, *rest], tokenizer, plain
