"""A test double of a backend: deterministic, instant (or slowed on purpose), byte-level.

Its "model" makes the next token a function of the *whole* token sequence in the lane, so a
lane whose book-keeping drifts from its cache produces different output: warm-vs-cold tests on
the double can fail. Tokens 0-255 are bytes; special tokens follow.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Sequence

import numpy as np

from ..types import SpecialTokens
from .base import AbortCheck, BackendConfig

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
