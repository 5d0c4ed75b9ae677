"""What `exlsp bench load` reports: per-kind latency percentiles and error counts, the daemon's
memory over the run, the engine's counters, and the priority check, as JSON values and as text.
Pure functions of what the clients recorded (bench_load_clients.Sample), so they are unit-tested
without a model."""

from __future__ import annotations

import statistics
from typing import Any, Iterable

from exlsp.runtime.bench_typing import _percentile

from .bench_load_clients import Sample

ENGINE_COUNTERS = ("jobs_submitted", "jobs_completed", "jobs_cancelled", "jobs_superseded", "jobs_failed",
                   "preemptions", "prompt_tokens", "reused_tokens", "prefilled_tokens", "generated_tokens",
                   "prefill_seconds", "decode_seconds")


def latency_stats(values: Iterable[float]) -> dict[str, Any]:
    data = sorted(values)
    if not data:
        return {"n": 0}
    return {
        "n": len(data),
        "p50_ms": round(_percentile(data, 0.50), 2),
        "p95_ms": round(_percentile(data, 0.95), 2),
        "p99_ms": round(_percentile(data, 0.99), 2),
        "mean_ms": round(statistics.fmean(data), 2),
        "max_ms": round(data[-1], 2),
    }


def kind_summary(samples: list[Sample], seconds: float) -> dict[str, Any]:
    """One request kind: counts, throughput of answered requests, latencies, errors by code."""
    done = [s for s in samples if s.outcome == "done"]
    errors: dict[str, int] = {}
    for s in samples:
        if s.outcome == "error":
            errors[s.code] = errors.get(s.code, 0) + 1
    row: dict[str, Any] = {
        "sent": len(samples),
        "answered": len(done),
        "empty_answers": sum(s.empty for s in done),
        "cancelled": sum(s.outcome == "cancelled" for s in samples),
        "errors": sum(errors.values()),
        "errors_by_code": errors,
        "throughput_per_s": round(len(done) / seconds, 2) if seconds > 0 else None,
        "latency_ms": latency_stats(s.latency_ms for s in done if s.latency_ms is not None),
    }
    ttft = [s.ttft_ms for s in done if s.ttft_ms is not None]
    if ttft:
        row["ttft_ms"] = latency_stats(ttft)
    engine = [s.engine_ttft_ms for s in done if s.engine_ttft_ms is not None]
    if engine:
        row["engine_ttft_ms"] = latency_stats(engine)
    return row


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var * 60


def memory_summary(rss: list[tuple[float, int, int]], seconds: float) -> dict[str, Any]:
    """(t, VmRSS KiB, VmHWM KiB) samples -> MiB at start, peak, end; growth over the second half."""
    if not rss:
        return {"samples": 0}
    mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
    second = [(t, kib / 1024) for t, kib, _ in rss if t >= seconds / 2]
    slope = slope_per_min(second)
    return {
        "samples": len(rss),
        "start_mib": mib(rss[0][1]),
        "peak_mib": mib(max(max(r, h) for _, r, h in rss)),
        "end_mib": mib(rss[-1][1]),
        "second_half_growth_mib": round(second[-1][1] - second[0][1], 1) if len(second) > 1 else None,
        "second_half_slope_mib_per_min": round(slope, 2) if slope is not None else None,
    }


def priority_check(kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Do completions keep their priority over chat? Time to the first token of a socket
    ``complete`` and the latency of an LSP inline answer, against a chat's time to first token:
    under load, chat waits behind every completion and suggestion, completions behind none."""

    def p50(kind: str, key: str) -> float | None:
        return kinds.get(kind, {}).get(key, {}).get("p50_ms")

    out: dict[str, Any] = {
        "complete_ttft_p50_ms": p50("complete", "ttft_ms"),
        "inline_latency_p50_ms": p50("inline", "latency_ms"),
        "suggest_latency_p50_ms": p50("suggest", "latency_ms"),
        "chat_ttft_p50_ms": p50("chat", "ttft_ms"),
        "chat_latency_p50_ms": p50("chat", "latency_ms"),
    }
    chat = out["chat_ttft_p50_ms"]
    fast = [v for v in (out["complete_ttft_p50_ms"], out["inline_latency_p50_ms"]) if v is not None]
    if chat is None or not fast:
        out["held"] = None
        out["why"] = "needs answered chats and completions (complete or inline) to compare"
        return out
    out["held"] = all(v < chat for v in fast)
    if out["complete_ttft_p50_ms"]:
        out["chat_over_complete_ttft_p50"] = round(chat / out["complete_ttft_p50_ms"], 2)
    return out


def engine_delta(before: dict[str, Any], after: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """The engine's counters over the run, and how busy its thread was (prefill + decode / wall)."""
    delta = {k: round(after.get(k, 0) - before.get(k, 0), 3) for k in ENGINE_COUNTERS if k in after}
    busy = delta.get("prefill_seconds", 0) + delta.get("decode_seconds", 0)
    delta["busy_fraction"] = round(busy / wall_s, 3) if wall_s > 0 else None
    return delta


def _ms(row: dict[str, Any], key: str, p: str) -> str:
    value = row.get(key, {}).get(f"{p}_ms")
    return "" if value is None else f"{value:.0f}"


def summary(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"{result['model']} ({result['backend']}), daemon threads {c['daemon']['threads']}; "
        f"{c['socket_clients']} socket clients ({', '.join(f'{k}={v:g}' for k, v in c['mix'].items())}), "
        f"{c['lsp_clients']} editors ({c['lsp_transport']}), {c['seconds']:g} s",
        f"{'kind':<9} {'sent':>6} {'done':>6} {'/s':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'ttft50':>7} {'ttft95':>7}"
        f" {'cancel':>6} {'errors':>6}",
    ]
    for kind, row in result["kinds"].items():
        lines.append(
            f"{kind:<9} {row['sent']:>6} {row['answered']:>6} {row['throughput_per_s']:>6} "
            f"{_ms(row, 'latency_ms', 'p50'):>7} {_ms(row, 'latency_ms', 'p95'):>7} {_ms(row, 'latency_ms', 'p99'):>7} "
            f"{_ms(row, 'ttft_ms', 'p50'):>7} {_ms(row, 'ttft_ms', 'p95'):>7} {row['cancelled']:>6} {row['errors']:>6}"
            + (f"  {row['errors_by_code']}" if row["errors"] else ""))
    pr, mem, eng, q = result["priority"], result["memory"], result["engine"], result["queue"]
    verdict = {True: "held", False: "NOT held", None: "not measured"}[pr["held"]]
    lines.append(f"priority over chat: {verdict} (complete TTFT p50 {pr['complete_ttft_p50_ms']} ms, inline p50 "
                 f"{pr['inline_latency_p50_ms']} ms, chat TTFT p50 {pr['chat_ttft_p50_ms']} ms)")
    lines.append(f"engine: {eng.get('jobs_submitted')} jobs, {eng.get('preemptions')} pre-emptions, "
                 f"{eng.get('jobs_superseded')} superseded, {eng.get('jobs_cancelled')} cancelled; "
                 f"queue mean {q['mean']} max {q['max']}")
    lines.append(f"daemon RSS: start {mem.get('start_mib')} MiB, peak {mem.get('peak_mib')}, end {mem.get('end_mib')}; "
                 f"second half {mem.get('second_half_growth_mib')} MiB ({mem.get('second_half_slope_mib_per_min')} MiB/min)")
    t = result["totals"]
    lines.append(f"total: {t['answered']} answered ({t['throughput_per_s']}/s), {t['cancelled']} cancelled, "
                 f"{t['errors']} errors" + ("" if result["daemon_alive_at_end"] else "; THE DAEMON DIED"))
    return "\n".join(lines)
