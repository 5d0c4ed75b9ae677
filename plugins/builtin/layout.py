"""Cache-stable windows of the current document and extra context for completion prompts.

The engine reuses the KV cache of the longest common token prefix with an earlier prompt, so a
keystroke is cheap only when the new prompt starts like the previous one. Following llama.vim:

- extra context goes first and changes in batches: new chunks wait until enough of them have
  gathered (or the window moves anyway); when over budget the oldest go at once, leaving a
  quarter of the context budget free for the next arrivals;
- the prefix window starts on a line number that is a multiple of ``snap_lines`` and moves only
  when the text outgrows the budget, then far enough to leave ``headroom`` for more typing;
- the volatile text near the cursor comes last: prefix:suffix is ``prefix_ratio`` in exact tokens.

``PromptLayout`` is a plain object (no plugin hooks); the assistant keeps one and passes a
document key per call. Its settings live with the ``fim`` plugin (see ``fim.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from exlsp.plugins.api import ContextChunk, ModelInfo

CountTokens = Callable[[str], int]

DEFAULTS: dict[str, Any] = {
    "prefix_ratio": 0.75,  # share of the local window (prefix + suffix) given to the prefix
    "context_ratio": 0.5,  # at most this share of the budget goes to extra context
    "snap_lines": 16,  # the prefix window starts on a multiple of this line number
    "headroom": 0.25,  # after a move, this share of the window is left free for typing
    "max_prefix_lines": 256,  # llama.vim's defaults
    "max_suffix_lines": 64,
}
CHUNK_OVERHEAD = 4  # separator tokens and newlines a prompt format adds around each chunk
MAX_DOCUMENTS = 64


@dataclass(slots=True)
class Window:
    """What goes into one prompt, in this order: ``chunks``, ``prefix``, ``suffix``."""

    prefix: str
    suffix: str
    chunks: list[ContextChunk]
    prefix_tokens: int
    suffix_tokens: int
    context_tokens: int
    prefix_moved: bool = False  # the prefix window's start line changed on this call
    context_changed: bool = False  # the stable chunks changed on this call

    @property
    def tokens(self) -> int:
        return self.prefix_tokens + self.suffix_tokens + self.context_tokens


@dataclass
class _DocState:
    start_line: int = -1  # -1: not laid out yet
    start_offset: int = 0  # where start_line begins in the prefix
    budget: int = 0
    chunks: list[ContextChunk] = field(default_factory=list)  # the stable chunks, prompt order
    costs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    rejected: set[tuple[str, str, str]] = field(default_factory=set)  # offered, did not fit
    suffix_cache: tuple[Any, ...] = ("", -1, "", 0)  # suffix, budget -> window text, tokens


def _key(chunk: ContextChunk) -> tuple[str, str, str]:
    return (chunk.source, chunk.path, chunk.text)


class PromptLayout:
    def __init__(self, count_tokens: CountTokens | None = None, **settings: Any) -> None:
        self._count = count_tokens
        self._docs: OrderedDict[str, _DocState] = OrderedDict()
        self.settings = dict(DEFAULTS)
        self.configure(settings)

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Take the known keys that are in range; anything else keeps its current value."""
        ranges = {
            "prefix_ratio": (0.05, 1.0),
            "context_ratio": (0.0, 0.95),
            "headroom": (0.0, 0.9),
            "snap_lines": (1, 10_000),
            "max_prefix_lines": (1, 1_000_000),
            "max_suffix_lines": (0, 1_000_000),
        }
        for name, (lo, hi) in ranges.items():
            value = settings.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi:
                self.settings[name] = type(DEFAULTS[name])(value)
        self._docs.clear()  # old windows were cut by the old rules

    def forget(self, doc_key: str) -> None:
        self._docs.pop(doc_key, None)

    # ---- the window ---------------------------------------------------------------------------------

    def window(
        self,
        doc_key: str,
        prefix: str,
        suffix: str,
        chunks: Sequence[ContextChunk],
        budget: int,
        model: ModelInfo | None = None,
    ) -> Window:
        """Prefix, suffix and chunks within ``budget`` tokens: prefix and suffix counted exactly,
        chunks with their path and ``CHUNK_OVERHEAD`` for a format's separators (the format adds
        its FIM tokens; keep a few tokens for them). Pass ``suffix=""`` for formats that do not
        use one (``uses_suffix`` False): the prefix then gets the whole local window."""
        counter = model.count_tokens if model is not None else self._count
        if counter is None:
            raise ValueError("PromptLayout needs count_tokens, or a model per call")
        memo: dict[str, int] = {}

        def count(text: str) -> int:  # the same window text is measured more than once per call
            n = memo.get(text)
            if n is None:
                n = memo[text] = counter(text)
            return n

        budget = max(0, int(budget))
        st = self._docs.pop(doc_key, None) or _DocState()
        self._docs[doc_key] = st
        while len(self._docs) > MAX_DOCUMENTS:
            self._docs.popitem(last=False)

        stable = [c for c in chunks if c.stable]
        volatile = [c for c in chunks if not c.stable]
        ctx_budget = int(budget * self.settings["context_ratio"])
        context_changed = False
        reset = st.start_line < 0 or st.budget != budget
        if reset or self._pending_is_large(st, stable, ctx_budget, count):
            self._refresh_context(st, stable, ctx_budget, count, reset)
            context_changed = True
        st.budget = budget

        def local_window() -> tuple[list[ContextChunk], int, str, int, tuple[int, int]]:
            ctx_tokens = sum(c.tokens for c in st.chunks)
            extra, extra_tokens = self._volatile(volatile, ctx_budget - ctx_tokens, count)
            local = budget - ctx_tokens - extra_tokens
            suffix_budget = int(local * (1 - self.settings["prefix_ratio"]))
            if st.suffix_cache[:2] != (suffix, suffix_budget):  # while typing it stays the same
                st.suffix_cache = (suffix, suffix_budget, *self._suffix(suffix, suffix_budget, count))
            text, tokens = st.suffix_cache[2], st.suffix_cache[3]
            start = self._choose_start(st, prefix, local - tokens, count)
            return extra, ctx_tokens + extra_tokens, text, tokens, start

        extra, ctx_tokens, suffix_text, suffix_tokens, start = local_window()
        if start[0] != st.start_line and not context_changed and self._differs(st, stable):
            # The prompt after the context changes now anyway: bring the context up to date too.
            self._refresh_context(st, stable, ctx_budget, count)
            context_changed = True
            extra, ctx_tokens, suffix_text, suffix_tokens, start = local_window()
        moved = start[0] != st.start_line
        st.start_line, st.start_offset = start
        prefix_text, prefix_tokens = self._prefix_from(prefix, start[1], budget - ctx_tokens - suffix_tokens, count)
        return Window(
            prefix=prefix_text,
            suffix=suffix_text,
            chunks=[*st.chunks, *extra],
            prefix_tokens=prefix_tokens,
            suffix_tokens=suffix_tokens,
            context_tokens=ctx_tokens,
            prefix_moved=moved,
            context_changed=context_changed,
        )

    # ---- extra context ------------------------------------------------------------------------------

    def _cost(self, st: _DocState, chunk: ContextChunk, count: CountTokens) -> int:
        key = _key(chunk)
        cost = st.costs.get(key)
        if cost is None:
            cost = st.costs[key] = count(chunk.text) + (count(chunk.path) if chunk.path else 0) + CHUNK_OVERHEAD
        return cost

    @staticmethod
    def _pending(st: _DocState, offered: Sequence[ContextChunk]) -> list[ContextChunk]:
        """Offered chunks neither in the prompt nor turned away at the last refresh."""
        seen = {_key(c) for c in st.chunks} | st.rejected
        return [c for c in offered if _key(c) not in seen]

    def _pending_is_large(
        self, st: _DocState, offered: Sequence[ContextChunk], ctx_budget: int, count: CountTokens
    ) -> bool:
        pending = sum(self._cost(st, c, count) for c in self._pending(st, offered))
        return pending > 0 and pending >= ctx_budget * self.settings["headroom"]

    def _differs(self, st: _DocState, offered: Sequence[ContextChunk]) -> bool:
        offered_keys = {_key(c) for c in offered}
        vanished = any(_key(c) not in offered_keys for c in st.chunks)
        return vanished or bool(self._pending(st, offered))

    def _refresh_context(
        self, st: _DocState, offered: Sequence[ContextChunk], ctx_budget: int, count: CountTokens, reset: bool = False
    ) -> None:
        """Keep the included chunks still offered, in their order; append the new ones; when over
        budget, drop the oldest until ``headroom`` is free (one big eviction, not one per call)."""
        offered_keys = {_key(c) for c in offered}
        if reset:
            st.rejected = set()
        kept = [c for c in st.chunks if _key(c) in offered_keys]
        # Chunks evicted before stay out: bringing them back would evict the ones kept instead.
        known = {_key(c) for c in kept} | st.rejected
        fresh = [c for c in offered if _key(c) not in known]
        chosen = [c for c in kept + fresh if self._cost(st, c, count) <= ctx_budget]
        for c in chosen:
            c.tokens = self._cost(st, c, count)
        total = sum(c.tokens for c in chosen)
        if total > ctx_budget:
            while total > ctx_budget:
                total -= chosen.pop(0).tokens
            # Free ``headroom`` for the next arrivals while at it, unless that would leave the
            # context less than half full (with chunks large next to the budget).
            room, floor = ctx_budget * self.settings["headroom"], ctx_budget * (1 - 2 * self.settings["headroom"])
            while len(chosen) > 1 and ctx_budget - total < room and total - chosen[0].tokens >= floor:
                total -= chosen.pop(0).tokens
        st.chunks = chosen
        st.rejected = offered_keys - {_key(c) for c in chosen}
        st.costs = {k: v for k, v in st.costs.items() if k in offered_keys}

    def _volatile(
        self, volatile: Sequence[ContextChunk], room: int, count: CountTokens
    ) -> tuple[list[ContextChunk], int]:
        taken, used = [], 0
        for c in volatile:
            c.tokens = count(c.text) + (count(c.path) if c.path else 0) + CHUNK_OVERHEAD
            if used + c.tokens <= room:
                taken.append(c)
                used += c.tokens
        return taken, used

    # ---- the local window ---------------------------------------------------------------------------

    def _suffix(self, suffix: str, budget: int, count: CountTokens) -> tuple[str, int]:
        if not suffix or budget <= 0:
            return "", 0
        lines = suffix.split("\n")[: max(1, self.settings["max_suffix_lines"])]
        first = lines[0]
        if count(first) > budget:  # a huge line after the cursor: keep what fits of its start
            first = _fit_head(first, budget, count)
            return first, count(first)
        taken, used = [first], count(first)
        for line in lines[1:]:
            cost = count("\n" + line)
            if used + cost > budget:
                break
            taken.append(line)
            used += cost
        text = "\n".join(taken)
        tokens = count(text)
        # Per-line counts are close, not exact (BPE merges across "\n"): check the whole.
        while tokens > budget and len(taken) > 1:
            taken.pop()
            text = "\n".join(taken)
            tokens = count(text)
        return text, tokens

    @staticmethod
    def _fits(prefix: str, offsets: list[int], line: int, budget: float, lines: float, count: CountTokens) -> bool:
        return len(offsets) - line <= lines and count(prefix[offsets[line] :]) <= budget

    def _choose_start(self, st: _DocState, prefix: str, budget: int, count: CountTokens) -> tuple[int, int]:
        """(line, offset) of the window's start: the current one while it still works — inside
        the prefix, within budget, and (when not at the top) not nearly empty, as after the
        cursor jumped back — else a new one. Checking the current one scans no line table."""
        line, at = st.start_line, st.start_offset
        intact = 0 <= line and at <= len(prefix) and (at == 0 or prefix[at - 1] == "\n")
        if intact and prefix.count("\n", 0, at) == line:
            lines = prefix.count("\n", at) + 1
            tokens = count(prefix[at:])
            if lines <= self.settings["max_prefix_lines"] and tokens <= budget:
                low = (1 - self.settings["headroom"]) / 2
                if line == 0 or lines >= self.settings["max_prefix_lines"] * low or tokens >= budget * low:
                    return line, at
        offsets = _line_offsets(prefix)
        line = self._new_start(prefix, offsets, budget, count)
        return line, offsets[line]

    def _new_start(self, prefix: str, offsets: list[int], budget: int, count: CountTokens) -> int:
        """The first snapped line from which the prefix fills at most ``1 - headroom`` of the
        budget. Snapped to absolute line numbers, so recomputing lands on the same line."""
        fill = 1 - self.settings["headroom"]
        limit, max_lines = budget * fill, self.settings["max_prefix_lines"] * fill
        last = len(offsets) - 1  # the cursor line

        def fits(line: int) -> bool:
            return self._fits(prefix, offsets, line, limit, max_lines, count)

        if fits(0):
            return 0
        candidates = list(range(0, last + 1, self.settings["snap_lines"]))
        if not fits(candidates[-1]):
            # The last snapped block is too long on its own: single lines from there on.
            candidates = list(range(candidates[-1], last + 1))
            if not fits(candidates[-1]):
                return last
        lo, hi = 0, len(candidates) - 1  # candidates[lo] does not fit, candidates[hi] does
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(candidates[mid]):
                hi = mid
            else:
                lo = mid
        return candidates[hi]

    @staticmethod
    def _prefix_from(prefix: str, offset: int, budget: int, count: CountTokens) -> tuple[str, int]:
        if budget <= 0 or not prefix:
            return "", 0
        text = prefix[offset:]
        tokens = count(text)
        if tokens > budget:  # even the cursor line alone is too long: keep its end
            text = _fit_tail(text, budget, count)
            tokens = count(text)
        return text, tokens


def _line_offsets(text: str) -> list[int]:
    """Offsets where each line starts; the last entry is the cursor line."""
    offsets = [0]
    at = text.find("\n")
    while at >= 0:
        offsets.append(at + 1)
        at = text.find("\n", at + 1)
    return offsets


def _fit_tail(text: str, budget: int, count: CountTokens) -> str:
    lo, hi = 0, len(text)  # smallest start whose tail fits
    while lo < hi:
        mid = (lo + hi) // 2
        if count(text[mid:]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return text[lo:]


def _fit_head(text: str, budget: int, count: CountTokens) -> str:
    lo, hi = 0, len(text)  # longest head that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def completion_budget(model: ModelInfo, max_tokens: int, reserve: int = 16) -> int:
    """Tokens of text a completion prompt may hold: the context minus the answer, BOS and the
    format's special tokens (``reserve``)."""
    return max(0, model.n_ctx - max_tokens - reserve - (1 if model.special.add_bos else 0))
