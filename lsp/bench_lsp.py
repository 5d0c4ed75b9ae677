"""`exlsp bench lsp`: the typing replay of `exlsp bench typing`, but as an editor drives it — through
the language server (an in-process pygls client over pipes: didChange + inlineCompletion per
character) — with KV lanes and with reuse off, plus the LSP's overhead against the engine's own
time for the same requests.

Per request the client-side latency (request sent -> items received: what the user waits for) is
paired with the engine's record of the generation it caused; the overhead is everything else
(JSON-RPC, document sync, context, prompt layout, post-processing). Requests answered from the
server's typed-through cache never reach the engine: they are counted, not paired.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

from lsprotocol import types

from exlsp.plugins.assistant import Assistant
from exlsp.plugins.manager import PluginManager
from exlsp.runtime import Completion, Engine
from exlsp.runtime.bench_typing import TypingReplay, _percentile, machine_info, summarize

from .inprocess import connect, initialize_params, inline_params, open_document
from .server import ServerState, build_server


def _position(text: str, offset: int) -> types.Position:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    return types.Position(line=line, character=len(text[offset - col : offset].encode("utf-16-le")) // 2)


async def replay_lsp(engine: Engine, rp: TypingReplay, *, reuse: bool, max_tokens: int) -> dict[str, Any]:
    plugins = PluginManager(local_dirs=[])
    plugins.load()
    assistant = Assistant(engine, plugins)
    assistant.settings.reuse_cache = reuse
    state = ServerState(plugins=plugins, file_settings={"completion": {"maxTokens": max_tokens}})
    server = build_server(state)
    state.set_assistant(assistant)
    uri = "file:///bench/" + Path("typed.py").name
    text = rp.text[: rp.start] + rp.text[rp.start + rp.chars :]
    latencies: list[float] = []
    paired: list[tuple[float, Completion]] = []
    cache_hits = 0
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        await open_document(client, uri, text)
        for i in range(rp.chars):
            offset = rp.start + i
            ch = rp.text[offset]
            pos = _position(rp.text, offset)
            client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=i + 2),
                    content_changes=[types.TextDocumentContentChangePartial(range=types.Range(pos, pos), text=ch)],
                )
            )
            after = _position(rp.text, offset + 1)
            before = assistant.last_completion
            t0 = time.perf_counter()
            await client.text_document_inline_completion_async(inline_params(uri, after.line, after.character))
            latency = (time.perf_counter() - t0) * 1000
            latencies.append(latency)
            record = assistant.last_completion
            if record is before or record is None:
                cache_hits += 1
            else:
                paired.append((latency, record))
    records = [r for _, r in paired]
    mode = summarize(records) if records else {}
    mode.update(
        lsp_requests=len(latencies),
        lsp_cache_hits=cache_hits,
        lsp_latency_p50_ms=round(_percentile(latencies, 0.5), 2),
        lsp_latency_p95_ms=round(_percentile(latencies, 0.95), 2),
    )
    if paired:
        overhead = [lat - r.total_ms for lat, r in paired]
        engine_total = [r.total_ms for r in records]
        mode.update(
            lsp_paired_latency_p50_ms=round(_percentile([lat for lat, _ in paired], 0.5), 2),
            engine_total_p50_ms=round(_percentile(engine_total, 0.5), 2),
            overhead_p50_ms=round(statistics.median(overhead), 2),
            overhead_p95_ms=round(_percentile(overhead, 0.95), 2),
            overhead_ratio_p50=round(
                _percentile([lat for lat, _ in paired], 0.5) / _percentile(engine_total, 0.5) - 1, 4
            ),
        )
    return mode


async def run_lsp_bench(engine: Engine, rp: TypingReplay, *, max_tokens: int = 16, file: str = "") -> dict[str, Any]:
    modes = {}
    for name, reuse in (("lanes", True), ("no_reuse", False)):
        engine.clear_cache()
        modes[name] = await replay_lsp(engine, rp, reuse=reuse, max_tokens=max_tokens)
    lanes, cold = modes["lanes"], modes["no_reuse"]
    ratios = {
        "prefill_tokens_lanes_over_no_reuse": round(lanes["prefill_tokens_mean"] / cold["prefill_tokens_mean"], 4)
        if cold.get("prefill_tokens_mean")
        else None,
        "ttft_p50_speedup": round(cold["ttft_p50_ms"] / lanes["ttft_p50_ms"], 2) if lanes.get("ttft_p50_ms") else None,
        "lsp_latency_p50_speedup": round(cold["lsp_latency_p50_ms"] / lanes["lsp_latency_p50_ms"], 2),
        "lsp_overhead_ratio_p50_lanes": lanes.get("overhead_ratio_p50"),
    }
    return {
        "benchmark": "lsp",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": engine.backend.model_name,
        "backend": engine.backend.name,
        "machine": machine_info(),
        "config": {"file": file, "chars": rp.chars, "budget": rp.budget, "max_tokens": max_tokens,
                   "n_ctx": engine.backend.n_ctx, "context_providers": "built-in (on)"},
        "modes": modes,
        "ratios": ratios,
    }


def run(engine: Engine, rp: TypingReplay, max_tokens: int, file: str) -> dict[str, Any]:
    return asyncio.run(run_lsp_bench(engine, rp, max_tokens=max_tokens, file=file))
