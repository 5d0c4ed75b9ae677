"""llama.cpp through llama-cpp-python's low-level API: GGUF models on the CPU (Metal/CUDA for
users whose build has them).

Lanes are sequences of one context (``n_seq_max = n_lanes``, non-unified KV: each lane has its own
``n_ctx`` cells and attention never looks at another lane). Truncating a lane is
``llama_memory_seq_rm``; no state is ever copied, so switching lanes costs nothing.
We do not use ``llama_cpp.Llama``: it supports one sequence, and its FIM path is broken
(see STYLE.md); the vocabulary's own FIM token ids are read instead.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BackendUnavailable, ModelError
from ..types import SpecialTokens
from .base import AbortCheck, BackendConfig, ProgressCallback

log = logging.getLogger(__name__)
_init_lock = threading.Lock()
_log_callback: Any = None  # kept alive for the life of the process


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp  # noqa: PLC0415 - imported lazily on purpose
    except ImportError as exc:
        raise BackendUnavailable(
            f"llama-cpp-python is not installed ({exc}); install it with `pip install llama-cpp-python`"
        ) from None
    return llama_cpp


def _route_native_logs(lc: Any) -> None:
    """llama.cpp logs to stderr by default; send it to Python logging (never stdout)."""
    global _log_callback
    if _log_callback is not None:
        return

    @lc.llama_log_callback
    def _cb(level: int, text: bytes, _user: Any) -> None:
        if text:
            log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    _log_callback = _cb
    lc.llama_log_set(_cb, ctypes.c_void_p(0))


def _no_mmap(lc: Any, mparams: Any) -> None:
    """Load without mmap, in either llama-cpp-python API (ctypes ignores an unknown field)."""
    fields = {name for name, *_ in type(mparams)._fields_}
    if "load_mode" in fields:  # 0.3.3x: an enum, AUTO (-1) picks mmap
        mparams.load_mode = lc.LLAMA_LOAD_MODE_NONE
    elif "use_mmap" in fields:
        mparams.use_mmap = False
    else:
        log.warning("llama.cpp: no way to turn mmap off in this llama-cpp-python; a model file changed in place may crash exlsp")


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, lc: Any, model: Any, ctx: Any, path: Path, config: BackendConfig) -> None:
        self._lc = lc
        self._model = model
        self._ctx = ctx
        self._vocab = lc.llama_model_get_vocab(model)
        self._mem = lc.llama_get_memory(ctx)
        self.model_path = path
        self.model_name = path.stem
        self.n_lanes = config.n_lanes
        self.n_ctx = config.n_ctx
        self.n_batch = config.n_batch
        self.vocab_size = lc.llama_vocab_n_tokens(self._vocab)
        self._batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self._logits: list[np.ndarray | None] = [None] * self.n_lanes
        self._pieces = [self._piece(t) for t in range(self.vocab_size)]
        self.special_tokens = self._read_special_tokens()
        template = lc.llama_model_chat_template(model, None)
        self.chat_template: str | None = template.decode("utf-8", "replace") if template else None
        self._abort: AbortCheck | None = None

        @lc.ggml_abort_callback
        def _abort_cb(_data: Any) -> bool:
            check = self._abort
            return bool(check and check())

        self._abort_cb = _abort_cb
        lc.llama_set_abort_callback(ctx, _abort_cb, ctypes.c_void_p(0))

    @classmethod
    def load(
        cls, path: Path, config: BackendConfig, progress: ProgressCallback | None = None
    ) -> LlamaCppBackend:
        lc = _import_llama_cpp()
        with _init_lock:
            _route_native_logs(lc)
            lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = config.gpu_layers
        # Read the weights into memory, not mmap: a resident process outlives its file. A GGUF
        # truncated or rewritten in place (`cp new.gguf model.gguf`, an interrupted download) would
        # otherwise kill it with SIGBUS on its next token; deleted or replaced, it is never read again.
        _no_mmap(lc, mparams)
        if progress is not None:

            @lc.llama_progress_callback
            def _progress(fraction: float, _user: Any) -> bool:
                try:
                    progress(float(fraction))
                except Exception:  # a broken progress display must not fail the load
                    log.exception("progress callback failed")
                return True

            mparams.progress_callback = _progress
        model = lc.llama_model_load_from_file(os.fsencode(path), mparams)
        if not model:
            raise ModelError(f"llama.cpp could not load {path}: truncated, corrupt or unsupported GGUF")
        n_ctx = min(config.n_ctx, lc.llama_model_n_ctx_train(model) or config.n_ctx)
        config = dataclasses.replace(config, n_ctx=n_ctx)
        threads = config.n_threads or os.cpu_count() or 1
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx * config.n_lanes
        cparams.n_batch = config.n_batch
        cparams.n_ubatch = config.n_batch
        cparams.n_seq_max = config.n_lanes
        cparams.kv_unified = False
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = True
        ctx = lc.llama_init_from_model(model, cparams)
        if not ctx:
            lc.llama_model_free(model)
            raise ModelError(f"llama.cpp could not create a context for {path} (n_ctx={cparams.n_ctx})")
        if progress is not None:
            progress(1.0)
        return cls(lc, model, ctx, path, config)

    # ---- tokenizer -------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        # add_special adds BOS only where the vocabulary asks for it.
        data = text.encode("utf-8", "replace")  # a lone surrogate from a client: "?", never a crash
        cap = len(data) + 8
        buf = (self._lc.llama_token * cap)()
        n = self._lc.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, special)
        if n < 0:  # cannot happen with cap > bytes, but llama.cpp tells the size needed
            cap = -n
            buf = (self._lc.llama_token * cap)()
            n = self._lc.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, special)
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        return self._pieces[token] if 0 <= token < len(self._pieces) else b""

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lc.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def _read_special_tokens(self) -> SpecialTokens:
        lc, v = self._lc, self._vocab

        def tok(fn: str) -> int | None:
            t = getattr(lc, fn)(v)
            return t if 0 <= t < self.vocab_size else None

        flags = lc.LLAMA_TOKEN_ATTR_CONTROL | lc.LLAMA_TOKEN_ATTR_USER_DEFINED
        by_text = {}
        for t in range(self.vocab_size):
            if lc.llama_vocab_get_attr(v, t) & flags:
                by_text[lc.llama_vocab_get_text(v, t).decode("utf-8", "replace")] = t
        return SpecialTokens(
            bos=tok("llama_vocab_bos"),
            eos=tok("llama_vocab_eos"),
            eot=tok("llama_vocab_eot"),
            fim_prefix=tok("llama_vocab_fim_pre"),
            fim_suffix=tok("llama_vocab_fim_suf"),
            fim_middle=tok("llama_vocab_fim_mid"),
            fim_pad=tok("llama_vocab_fim_pad"),
            fim_repo=tok("llama_vocab_fim_rep"),
            fim_sep=tok("llama_vocab_fim_sep"),
            add_bos=bool(lc.llama_vocab_get_add_bos(v)),
            by_text=by_text,
        )

    # ---- lanes --------------------------------------------------------------------------------------

    def eval(self, lane: int, tokens: Sequence[int], start: int, should_abort: AbortCheck) -> int:
        lc, batch = self._lc, self._batch
        done = 0
        total = len(tokens)
        while done < total:
            if should_abort():
                break
            chunk = tokens[done : done + self.n_batch]
            last = done + len(chunk) == total
            for i, t in enumerate(chunk):
                batch.token[i] = t
                batch.pos[i] = start + done + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = lane
                batch.logits[i] = last and i == len(chunk) - 1
            batch.n_tokens = len(chunk)
            # The abort callback runs per graph node: only worth its cost on multi-token chunks.
            # Inside a chunk only a stricter question stops it (base.AbortCheck).
            self._abort = (lambda: should_abort(True)) if len(chunk) > 1 else None
            try:
                rc = lc.llama_decode(self._ctx, batch)
            finally:
                self._abort = None
            if rc == 2:  # aborted: drop whatever part of this chunk reached the cache
                lc.llama_memory_seq_rm(self._mem, lane, start + done, -1)
                break
            if rc != 0:
                lc.llama_memory_seq_rm(self._mem, lane, start + done, -1)
                raise RuntimeError(f"llama_decode failed with code {rc} (lane {lane}, pos {start + done})")
            done += len(chunk)
            if last:
                ptr = lc.llama_get_logits_ith(self._ctx, -1)
                self._logits[lane] = np.ctypeslib.as_array(ptr, shape=(self.vocab_size,)).copy()
        if done < total:
            self._logits[lane] = None
        return done

    def logits(self, lane: int) -> np.ndarray:
        logits = self._logits[lane]
        if logits is None:
            raise RuntimeError(f"lane {lane} has no logits: evaluate a token first")
        return logits

    def truncate(self, lane: int, n: int) -> None:
        self._lc.llama_memory_seq_rm(self._mem, lane, n, -1)
        self._logits[lane] = None

    def memory_info(self) -> dict[str, Any]:
        return {
            "device": "cpu" if not self._lc.llama_supports_gpu_offload() else "llama.cpp offload",
            "model_mb": round(self._lc.llama_model_size(self._model) / 2**20, 1),
            "n_params": self._lc.llama_model_n_params(self._model),
            "kv_cells": self.n_ctx * self.n_lanes,
        }

    def close(self) -> None:
        if self._ctx:
            self._lc.llama_batch_free(self._batch)
            self._lc.llama_free(self._ctx)
            self._lc.llama_model_free(self._model)
            self._ctx = self._model = None
