"""Plain data passed between the engine and its callers.

Nothing here knows about LSP, sockets or plugins: callers build a ``GenerationRequest``, the engine
answers with ``Delta`` events and one final ``Completion``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Sequence


class Priority(enum.IntEnum):
    """Lower value runs first. A waiting job of a higher priority pre-empts a running one
    between two tokens (the pre-empted job keeps its lane and resumes later)."""

    INLINE = 0
    SHELL = 1
    CHAT = 2
    BACKGROUND = 3


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Greedy by default (temperature 0): completions must be reproducible."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(slots=True)
class GenerationRequest:
    """One generation job.

    ``prompt`` is either text (tokenized with special tokens parsed) or a token list (what FIM
    prompt builders produce). ``n_keep`` leading prompt tokens survive left-trimming when the
    prompt does not fit the lane's context.
    """

    prompt: str | Sequence[int]
    max_tokens: int = 64
    priority: Priority = Priority.INLINE
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: Sequence[str] = ()
    stop_tokens: Sequence[int] = ()
    # Stop at the model's end-of-generation tokens (EOS/EOT); off only for benchmarks.
    stop_at_eos: bool = True
    # After this many ms of decoding, stop at the next line end (llama-server's t_max_predict_ms).
    t_max_predict_ms: float | None = None
    # Called with the text so far after each token; an index it returns ends generation there
    # (prompt builders use it to stop at the end of the cursor's scope).
    stop_check: Callable[[str], int | None] | None = None
    # A newer job with the same key supersedes (cancels) an older, unfinished one.
    supersede_key: str | None = None
    # Lanes are grouped ("completion", "chat", "shell" ...) so chat never evicts completions.
    lane_group: str = "default"
    n_keep: int = 0
    # Prepend BOS when the model wants one (SpecialTokens.add_bos); prompt builders that place
    # it themselves switch this off.
    add_bos: bool = True
    # Benchmarks switch KV reuse off to measure what it saves.
    reuse_cache: bool = True


@dataclass(frozen=True, slots=True)
class Delta:
    """New text (and the tokens behind it) produced since the previous event."""

    text: str
    tokens: tuple[int, ...]


@dataclass(slots=True)
class Completion:
    """The final record of a job; the last event of every stream."""

    text: str
    tokens: list[int]
    # "stop" (stop string/token), "eos", "length", "time", "cancelled", "superseded", "error"
    stop_reason: str
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    trimmed_tokens: int = 0
    lane: int = -1
    preemptions: int = 0
    queue_ms: float = 0.0
    prefill_ms: float = 0.0
    ttft_ms: float = 0.0  # submit -> first token sampled
    decode_ms: float = 0.0
    total_ms: float = 0.0
    error: str | None = None

    @property
    def decode_tok_s(self) -> float:
        return self.generated_tokens / (self.decode_ms / 1000) if self.decode_ms > 0 else 0.0

    @property
    def cancelled(self) -> bool:
        return self.stop_reason in ("cancelled", "superseded")


@dataclass(frozen=True, slots=True)
class SpecialTokens:
    """Special token ids of the loaded model (None where the model has none).

    ``by_text`` maps every special/control token's text to its id, so that prompt formats can look up
    family-specific tokens (``<|repo_name|>``, ``[SUFFIX]`` ...) without knowing the backend.
    """

    bos: int | None = None
    eos: int | None = None
    eot: int | None = None
    fim_prefix: int | None = None
    fim_suffix: int | None = None
    fim_middle: int | None = None
    fim_pad: int | None = None
    fim_repo: int | None = None
    fim_sep: int | None = None
    # Whether the model expects BOS at the start of a prompt (SmolLM2, Qwen: no).
    add_bos: bool = False
    by_text: dict[str, int] = field(default_factory=dict)

    @property
    def end_of_generation(self) -> frozenset[int]:
        return frozenset(t for t in (self.eos, self.eot) if t is not None)

    @property
    def has_fim(self) -> bool:
        return None not in (self.fim_prefix, self.fim_suffix, self.fim_middle)
