"""`exlsp bench typing`: replay typing a real source file through the engine, once with KV cache
lanes and once with reuse off, and report what the lanes save.

The replay is what an editor does: after every typed character it asks for a completion whose
prompt is the text before the cursor (plus the text after it, for models with FIM tokens), bounded
by a token budget. The window's start only moves in coarse steps of whole lines, as a cache-aware
prompt builder would do, so consecutive prompts share their prefix.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import Engine
from .tokenizer import Tokenizer
from .types import Completion, GenerationRequest, Priority


@dataclass
class TypingReplay:
    text: str
    start: int  # offset where typing begins
    chars: int
    budget: int

    @classmethod
    def from_file(cls, path: Path, start_line: int | None, chars: int, budget: int) -> TypingReplay:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        if not lines:
            raise ValueError(f"{path} is empty")
        if start_line is None:
            start_line = len(lines) // 2
        start_line = max(0, min(start_line, len(lines) - 1))
        start = sum(len(line) for line in lines[:start_line])
        # Skip the indentation, as an editor's auto-indent would have typed it.
        while start < len(text) and text[start] in " \t":
            start += 1
        return cls(text=text, start=start, chars=min(chars, len(text) - start), budget=budget)


class PromptWindow:
    """Prefix (and suffix) windows within an exact token budget; the prefix window's first line
    only moves forward, a quarter of the budget at a time, so prompts stay prefix-stable."""

    def __init__(self, tokenizer: Tokenizer, budget: int, fim: bool) -> None:
        self.tok = tokenizer
        self.fim = fim
        self.prefix_budget = budget * 3 // 4 if fim else budget
        self.suffix_budget = budget - self.prefix_budget
        self._start = 0

    def prompt(self, prefix: str, suffix: str) -> list[int]:
        if self._start > len(prefix):
            self._start = 0
        tokens = self.tok.encode(prefix[self._start :])
        while len(tokens) > self.prefix_budget:
            drop = len(tokens) - self.prefix_budget + self.prefix_budget // 4
            cut_at = len(self.tok.decode(tokens[:drop]))
            nl = prefix.find("\n", self._start + cut_at)
            self._start = nl + 1 if nl >= 0 else len(prefix)
            tokens = self.tok.encode(prefix[self._start :])
        if not self.fim:
            return tokens
        sp = self.tok.special
        suffix_tokens = self.tok.encode(suffix)[: self.suffix_budget]
        # Suffix first (SPM): the suffix barely changes while typing, the prefix grows at its end.
        return [sp.fim_suffix, *suffix_tokens, sp.fim_prefix, *tokens, sp.fim_middle]  # type: ignore[list-item]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(records: list[Completion]) -> dict[str, Any]:
    def mean(attr: str) -> float:
        return round(statistics.fmean(getattr(r, attr) for r in records), 2)

    fractions = [r.reused_tokens / r.prompt_tokens for r in records if r.prompt_tokens]
    ttft = [r.ttft_ms for r in records]
    total = [r.total_ms for r in records]
    gen = sum(r.generated_tokens for r in records)
    dec = sum(r.decode_ms for r in records) / 1000
    return {
        "requests": len(records),
        "ttft_p50_ms": round(_percentile(ttft, 0.5), 2),
        "ttft_p95_ms": round(_percentile(ttft, 0.95), 2),
        "total_p50_ms": round(_percentile(total, 0.5), 2),
        "total_p95_ms": round(_percentile(total, 0.95), 2),
        "prompt_tokens_mean": mean("prompt_tokens"),
        "prefill_tokens_mean": mean("prefilled_tokens"),
        "reused_tokens_mean": mean("reused_tokens"),
        "generated_tokens_mean": mean("generated_tokens"),
        # Share of each prompt served from the KV cache; "after_first" leaves out the one cold start.
        "reuse_fraction_mean": round(statistics.fmean(fractions), 4) if fractions else 0.0,
        "reuse_fraction_after_first": round(statistics.fmean(fractions[1:]), 4) if len(fractions) > 1 else 0.0,
        "decode_tok_s": round(gen / dec, 2) if dec else 0.0,
    }


async def replay(engine: Engine, rp: TypingReplay, *, reuse: bool, max_tokens: int) -> list[Completion]:
    sp = engine.tokenizer.special
    window = PromptWindow(engine.tokenizer, rp.budget, fim=sp.has_fim)
    records = []
    for i in range(1, rp.chars + 1):
        cursor = rp.start + i
        prefix, suffix = rp.text[:cursor], rp.text[rp.start + rp.chars :]
        request = GenerationRequest(
            prompt=window.prompt(prefix, suffix),
            max_tokens=max_tokens,
            priority=Priority.INLINE,
            lane_group="completion",
            reuse_cache=reuse,
            stop_at_eos=True,
            supersede_key="bench",
        )
        records.append(await engine.complete(request))
    return records


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


async def run_typing_bench(
    engine: Engine, rp: TypingReplay, *, max_tokens: int = 16, file: str = ""
) -> dict[str, Any]:
    # Warm-up: the first forward pass pays one-off allocation costs in either mode.
    await engine.complete(GenerationRequest(prompt="warm up", max_tokens=2, lane_group="chat"))
    modes = {}
    for name, reuse in (("lanes", True), ("no_reuse", False)):
        engine.clear_cache()
        modes[name] = summarize(await replay(engine, rp, reuse=reuse, max_tokens=max_tokens))
    lanes, cold = modes["lanes"], modes["no_reuse"]
    ratios = {
        "prefill_tokens_lanes_over_no_reuse": round(
            lanes["prefill_tokens_mean"] / cold["prefill_tokens_mean"], 4
        )
        if cold["prefill_tokens_mean"]
        else None,
        "ttft_p50_speedup": round(cold["ttft_p50_ms"] / lanes["ttft_p50_ms"], 2) if lanes["ttft_p50_ms"] else None,
        "ttft_p95_speedup": round(cold["ttft_p95_ms"] / lanes["ttft_p95_ms"], 2) if lanes["ttft_p95_ms"] else None,
        "total_p50_speedup": round(cold["total_p50_ms"] / lanes["total_p50_ms"], 2)
        if lanes["total_p50_ms"]
        else None,
    }
    return {
        "benchmark": "typing",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": engine.backend.model_name,
        "backend": engine.backend.name,
        "machine": machine_info(),
        "config": {
            "file": file,
            "chars": rp.chars,
            "budget": rp.budget,
            "max_tokens": max_tokens,
            "n_ctx": engine.backend.n_ctx,
            "fim": engine.tokenizer.special.has_fim,
        },
        "modes": modes,
        "ratios": ratios,
    }
