"""A test double of a backend: deterministic, instant (or slowed on purpose), byte-level.

Its "model" makes the next token a function of the *whole* token sequence in the lane, so a
lane whose book-keeping drifts from its cache produces different output: warm-vs-cold tests on
the double can fail. Tokens 0-255 are bytes; special tokens follow.

``FaultyBackend`` wraps any backend (this double, or the real llama.cpp one) and makes chosen
calls raise, for the fault tests (docs/faults.md).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..types import SpecialTokens
from .base import AbortCheck, Backend, BackendConfig

SPECIALS = ["<s>", "</s>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|im_end|>"]
PRINTABLE = [*range(32, 127), 10]


class FakeBackend:
    name = "fake"

    def __init__(
        self,
        config: BackendConfig = BackendConfig(n_lanes=3, n_ctx=512),
        *,
        token_delay_s: float = 0.0,
        script: Sequence[str] | None = None,
    ) -> None:
        self.model_name = "fake-byte-model"
        self.n_lanes = config.n_lanes
        self.n_ctx = config.n_ctx
        self.n_batch = config.n_batch
        self.token_delay_s = token_delay_s
        self.vocab_size = 256 + len(SPECIALS)
        ids = {text: 256 + i for i, text in enumerate(SPECIALS)}
        self.special_tokens = SpecialTokens(
            bos=ids["<s>"],
            eos=ids["</s>"],
            eot=ids["<|im_end|>"],
            fim_prefix=ids["<fim_prefix>"],
            fim_suffix=ids["<fim_suffix>"],
            fim_middle=ids["<fim_middle>"],
            add_bos=True,
            by_text=ids,
        )
        self._ids = ids
        # Canned continuations: when the lane's text ends with a script's key, emit its value.
        self.script = list(script or [])
        self._seqs: list[list[int]] = [[] for _ in range(self.n_lanes)]
        self.evaluated = 0  # tokens evaluated, all lanes (counters for tests)
        self.eval_calls = 0
        self.fail_next_eval: Exception | None = None
        self.lock = threading.Lock()

    # tokenizer
    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        out: list[int] = [self.special_tokens.bos] if add_bos else []  # type: ignore[list-item]
        i, data = 0, text
        while i < len(data):
            if special:
                hit = next((s for s in SPECIALS if data.startswith(s, i)), None)
                if hit:
                    out.append(self._ids[hit])
                    i += len(hit)
                    continue
            out.extend(data[i].encode())
            i += 1
        return out

    def token_bytes(self, token: int) -> bytes:
        return bytes([token]) if token < 256 else SPECIALS[token - 256].encode()

    # lanes
    def eval(self, lane: int, tokens: Sequence[int], start: int, should_abort: AbortCheck) -> int:
        seq = self._seqs[lane]
        assert len(seq) == start, f"lane {lane} holds {len(seq)} tokens, eval at {start}"
        done = 0
        for i in range(0, len(tokens), self.n_batch):
            if should_abort():
                break
            if self.fail_next_eval is not None:
                exc, self.fail_next_eval = self.fail_next_eval, None
                raise exc
            chunk = tokens[i : i + self.n_batch]
            if self.token_delay_s:
                time.sleep(self.token_delay_s * len(chunk))
            seq.extend(chunk)
            done += len(chunk)
            self.evaluated += len(chunk)
        self.eval_calls += 1
        return done

    def logits(self, lane: int) -> Any:
        seq = self._seqs[lane]
        logits = np.zeros(self.vocab_size, dtype=np.float32)
        text = bytes(t for t in seq if t < 256)
        for key, value in self.script:
            k = key.encode()
            for j in range(len(value)):
                if text.endswith(k + value[:j].encode()):
                    logits[value.encode()[j]] = 10.0
                    return logits
            if text.endswith(k + value.encode()):
                logits[self.special_tokens.eos] = 10.0  # type: ignore[index]
                return logits
        digest = hashlib.blake2b(np.asarray(seq, dtype=np.int64).tobytes(), digest_size=8).digest()
        logits[PRINTABLE[int.from_bytes(digest, "little") % len(PRINTABLE)]] = 10.0
        return logits

    def truncate(self, lane: int, n: int) -> None:
        del self._seqs[lane][n:]

    def memory_info(self) -> dict[str, Any]:
        return {"device": "cpu", "lanes": self.n_lanes}

    def close(self) -> None:
        self._seqs = [[] for _ in range(self.n_lanes)]


FAULT_OPS = ("eval", "logits", "truncate")


@dataclass
class _Fault:
    op: str
    exc: BaseException
    skip: int  # calls of ``op`` that still succeed before this fault fires
    times: int  # how often it fires; -1: every call from then on
    partial: bool  # eval only: evaluate the first half of the tokens, then raise


class FaultyBackend:
    """Any backend, with faults injected on its owner-thread calls.

    ``fail("eval", exc, after=1)`` makes the second ``eval`` call from now raise ``exc``: the
    engine's first ``eval`` of a job prefills the prompt, every later one decodes one token, so
    ``after`` picks the stage. ``partial=True`` evaluates half of that call's tokens in the wrapped
    backend before raising, as a device that fails mid-batch leaves a cache the engine's book does
    not know about. Everything else passes through; ``close`` leaves the wrapped backend open
    unless ``close_inner``, so a test can wrap the session's real model for a while.
    """

    def __init__(self, inner: Backend, *, close_inner: bool = False) -> None:
        self.inner = inner
        self.close_inner = close_inner
        self.calls = {op: 0 for op in FAULT_OPS}
        self.raised = 0
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fail(
        self, op: str, exc: BaseException | None = None, *, after: int = 0, times: int = 1, partial: bool = False
    ) -> None:
        if op not in FAULT_OPS:
            raise ValueError(f"unknown backend call {op!r}; one of {', '.join(FAULT_OPS)}")
        exc = exc if exc is not None else RuntimeError(f"injected {op} failure")
        with self._lock:
            self._faults.append(_Fault(op, exc, after, times, partial))

    def heal(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def _due(self, op: str) -> _Fault | None:
        with self._lock:
            self.calls[op] += 1
            for fault in self._faults:
                if fault.op != op:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                self.raised += 1
                return fault
        return None

    def eval(self, lane: int, tokens: Sequence[int], start: int, should_abort: AbortCheck) -> int:
        fault = self._due("eval")
        if fault is None:
            return self.inner.eval(lane, tokens, start, should_abort)
        if fault.partial and len(tokens) > 1:
            self.inner.eval(lane, tokens[: len(tokens) // 2], start, should_abort)
        raise fault.exc

    def logits(self, lane: int) -> Any:
        if (fault := self._due("logits")) is not None:
            raise fault.exc
        return self.inner.logits(lane)

    def truncate(self, lane: int, n: int) -> None:
        if (fault := self._due("truncate")) is not None:
            raise fault.exc
        self.inner.truncate(lane, n)

    def close(self) -> None:
        if self.close_inner:
            self.inner.close()
