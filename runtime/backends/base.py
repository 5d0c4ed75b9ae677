"""The backend interface: what the engine needs from a model runtime, and nothing more.

A backend holds a model and ``n_lanes`` independent KV caches ("lanes"). It knows nothing of
which tokens a lane holds: the engine keeps that book (``exlsp.runtime.lanes``) and only asks the
backend to evaluate tokens at the end of a lane or to drop a lane's tail. All methods except the
tokenizer ones are called from the engine's owner thread only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from ..types import SpecialTokens

# ``should_abort()`` is asked between prefill chunks; a backend that can stop *inside* a chunk asks
# ``should_abort(True)``, which is stricter: true only when the chunk's work would be wasted anyway
# (the engine closes, or a more urgent job needs the model now). A cancelled or superseded job lets
# its chunk finish, so the lane keeps it for the next keystroke's prompt, which shares the prefix.
AbortCheck = Callable[..., bool]


@dataclass(frozen=True, slots=True)
class BackendConfig:
    n_lanes: int = 4
    n_ctx: int = 4096  # per lane
    n_threads: int | None = None  # None: all cores
    n_batch: int = 128  # prefill chunk (llama.cpp also aborts inside one)
    gpu_layers: int = 0  # llama.cpp offload; exllamav2 always runs on the GPU
    seed: int = 0


@runtime_checkable
class Backend(Protocol):
    name: str
    model_name: str
    n_lanes: int
    n_ctx: int
    vocab_size: int
    special_tokens: SpecialTokens

    # Tokenizer (thread-safe, any thread)
    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]: ...
    def token_bytes(self, token: int) -> bytes: ...

    # KV cache lanes (owner thread only)
    def eval(self, lane: int, tokens: Sequence[int], start: int, should_abort: AbortCheck) -> int:
        """Evaluate ``tokens`` at positions ``start..`` of ``lane`` (whose cache holds exactly
        ``start`` tokens). Returns how many were evaluated: fewer than ``len(tokens)`` only when
        ``should_abort`` turned true; the lane then holds exactly ``start + returned`` tokens."""
        ...

    def logits(self, lane: int) -> Any:
        """Logits (1-D, vocab-sized, numpy-compatible) after the last evaluated token of ``lane``."""
        ...

    def truncate(self, lane: int, n: int) -> None:
        """Forget every position >= ``n`` in ``lane``."""
        ...

    def memory_info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


ProgressCallback = Callable[[float], None]
