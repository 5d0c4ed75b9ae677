"""`exlsp bench http`: what the HTTP front door costs over the bare engine.

The default model (or ``--model``) is loaded in this process with an Assistant as the daemon builds
it, and the HTTP app is served for real (uvicorn on 127.0.0.1, an ephemeral port). The same N short
chat questions (greedy, same ``max_tokens``) go through three paths:

- ``bare``: ``engine.generate`` with the very request the HTTP layer builds (same rendered prompt,
  chat priority, chat lane group);
- ``openai_sse``: ``POST /v1/chat/completions`` with ``stream: true`` through httpx streaming;
- ``ollama_ndjson``: ``POST /api/chat`` (NDJSON stream) through httpx streaming.

Time to first token (TTFT) is from sending the request to the first piece of content (a Delta
with text; the first ``data:`` chunk with non-empty ``delta.content``; the first NDJSON line with
non-empty ``message.content``). Decode tokens/s is (generated tokens - 1) / (last content - first
content) as the client sees it; generated tokens come from the final Completion, the SSE
``usage`` chunk, or Ollama's ``eval_count``.

Each question is first run once untimed, then once per path in a rotating order, so every timed
run starts from the same KV state (the question's own prompt resident in the chat lane): the
numbers compare transports, not cache luck.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import statistics
import time
from pathlib import Path
from typing import Any

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Why is the sky blue?",
    "What does a compiler do?",
    "Give me a synonym for happy.",
    "How many legs does a spider have?",
    "What is two plus two?",
    "Describe a cat in one sentence.",
    "What is Python used for?",
    "Say something about the moon.",
    "What is the boiling point of water?",
    "Name a famous painter.",
    "What is a prime number?",
    "Why do leaves change color?",
    "What is the largest ocean?",
    "How do birds fly?",
]

PATHS = ("bare", "openai_sse", "ollama_ndjson")


def _stats(values: list[float], unit: str) -> dict[str, Any]:
    data = sorted(values)
    if not data:
        return {"n": 0}
    cuts = statistics.quantiles(data, n=100, method="inclusive") if len(data) > 1 else [data[0]] * 99
    return {
        "n": len(data),
        f"p50_{unit}": round(statistics.median(data), 3),
        f"p95_{unit}": round(cuts[94], 3),
        f"mean_{unit}": round(statistics.fmean(data), 3),
        f"min_{unit}": round(data[0], 3),
        f"max_{unit}": round(data[-1], 3),
    }


def _question(i: int) -> str:
    q = QUESTIONS[i % len(QUESTIONS)]
    return q if i < len(QUESTIONS) else f"{q} (#{i // len(QUESTIONS) + 1})"


class _Sample:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.tokens = 0
        self.text: list[str] = []

    def piece(self, text: str) -> None:
        if not text:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.text.append(text)

    def result(self) -> dict[str, Any]:
        assert self.first is not None and self.last is not None, "no content came back"
        decode_s = self.last - self.first
        tps = (self.tokens - 1) / decode_s if self.tokens > 1 and decode_s > 0 else None
        return {"ttft_ms": (self.first - self.t0) * 1000, "tokens": self.tokens, "tokens_per_s": tps,
                "text": "".join(self.text)}


async def _bare(api: Any, engine: Any, prompt: str, max_tokens: int) -> dict[str, Any]:
    from exlsp.runtime import Completion, Delta

    request = api.chat_request(prompt, max_tokens=max_tokens, temperature=0.0, top_p=None, seed=None, stop=[])
    s = _Sample()
    stream = await engine.generate(request)
    async for event in stream:
        if isinstance(event, Delta):
            s.piece(event.text)
        elif isinstance(event, Completion):
            s.tokens = event.generated_tokens
    return s.result()


async def _openai(client: Any, question: str, max_tokens: int) -> dict[str, Any]:
    body = {"model": "exlsp", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    s = _Sample()
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or ():
                s.piece(choice.get("delta", {}).get("content") or "")
            if chunk.get("usage"):
                s.tokens = chunk["usage"]["completion_tokens"]
    return s.result()


async def _ollama(client: Any, question: str, max_tokens: int) -> dict[str, Any]:
    body = {"model": "exlsp", "messages": [{"role": "user", "content": question}],
            "options": {"num_predict": max_tokens, "temperature": 0}}
    s = _Sample()
    async with client.stream("POST", "/api/chat", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line:
                continue
            obj = json.loads(line)
            s.piece(obj.get("message", {}).get("content") or "")
            if obj.get("done"):
                s.tokens = obj.get("eval_count", 0)
    return s.result()


async def _measure(args: argparse.Namespace, engine: Any, assistant: Any) -> dict[str, Any]:
    import anyio
    import httpx

    from exlsp.plugins.api import ChatMessage

    from .http_api import make_app, serve_http

    app = make_app(assistant, token=None)
    api = app.state.api
    samples: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    mismatches = 0
    async with anyio.create_task_group() as tg:
        port = await tg.start(functools.partial(serve_http, app, "127.0.0.1", 0, token=None))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            await _bare(api, engine, api.chat_prompt([ChatMessage("user", "Hello.")]), 4)  # warm-up
            await _openai(client, "Hello.", 4)
            await _ollama(client, "Hello.", 4)
            for i in range(args.prompts):
                question = _question(i)
                prompt = api.chat_prompt([ChatMessage("user", question)])
                await _bare(api, engine, prompt, args.max_tokens)  # untimed: same KV state for every path
                runs = {
                    "bare": lambda: _bare(api, engine, prompt, args.max_tokens),
                    "openai_sse": lambda: _openai(client, question, args.max_tokens),
                    "ollama_ndjson": lambda: _ollama(client, question, args.max_tokens),
                }
                order = PATHS[i % 3:] + PATHS[:i % 3]
                texts = set()
                for path in order:
                    sample = await runs[path]()
                    samples[path].append(sample)
                    texts.add(sample["text"])
                mismatches += len(texts) > 1
        tg.cancel_scope.cancel()

    result: dict[str, Any] = {"ttft_ms": {}, "decode_tokens_per_s": {}, "overhead_vs_bare": {}}
    for path in PATHS:
        result["ttft_ms"][path] = _stats([s["ttft_ms"] for s in samples[path]], "ms")
        result["decode_tokens_per_s"][path] = _stats(
            [s["tokens_per_s"] for s in samples[path] if s["tokens_per_s"] is not None], "tps")
    bare_ttft = result["ttft_ms"]["bare"]
    bare_tps = result["decode_tokens_per_s"]["bare"]
    for path in PATHS[1:]:
        t, d = result["ttft_ms"][path], result["decode_tokens_per_s"][path]
        result["overhead_vs_bare"][path] = {
            "ttft_p50_ratio": round(t["p50_ms"] / bare_ttft["p50_ms"], 3),
            "ttft_p95_ratio": round(t["p95_ms"] / bare_ttft["p95_ms"], 3),
            "ttft_p50_added_ms": round(t["p50_ms"] - bare_ttft["p50_ms"], 3),
            "decode_tps_p50_ratio": round(d["p50_tps"] / bare_tps["p50_tps"], 3) if d.get("n") and bare_tps.get("n") else None,
        }
    result["tokens_per_answer"] = {p: round(statistics.fmean(s["tokens"] for s in samples[p]), 2) for p in PATHS}
    result["answers_differing_across_paths"] = mismatches
    return result


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from exlsp.plugins.assistant import Assistant
    from exlsp.plugins.manager import PluginManager
    from exlsp.runtime import BackendConfig, load_engine, resolve_model
    from exlsp.runtime.bench_typing import machine_info

    spec = resolve_model(args.model, args.backend)
    config = BackendConfig(n_lanes=3, n_ctx=4096, **({"n_threads": args.threads} if args.threads else {}))
    engine = load_engine(spec, config, lane_groups={"completion": 1, "shell": 1, "chat": 1})
    try:
        manager = PluginManager(local_dirs=[], entry_points=True)
        manager.load()
        assistant = Assistant(engine, manager)
        started = time.perf_counter()
        measured = anyio.run(_measure, args, engine, assistant)
        wall = time.perf_counter() - started
        status = engine.status()
    finally:
        engine.close()
    return {
        "benchmark": "http",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": assistant.model.name,
        "backend": status.get("backend"),
        "machine": machine_info(),
        "config": {"prompts": args.prompts, "max_tokens": args.max_tokens, "sampling": "greedy",
                   "n_lanes": 3, "n_ctx": 4096, "lane_groups": {"completion": 1, "shell": 1, "chat": 1},
                   "threads": args.threads, "transport": "httpx streaming over TCP to 127.0.0.1 (uvicorn)",
                   "kv_state": "each question run once untimed first; paths in rotating order"},
        **measured,
        "wall_s": round(wall, 2),
    }


def add_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    p = bench_subparsers.add_parser(
        "http", help="TTFT and decode tokens/s through the HTTP API (OpenAI SSE, Ollama NDJSON) vs the bare engine",
    )
    p.add_argument("--model", metavar="PATH", help="model to load (default: the default model)")
    p.add_argument("--backend", choices=("auto", "exllamav2", "llamacpp"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--prompts", type=int, default=10, help="chat questions per path (default 10)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per answer (default 32)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, help="also write the JSON to this file")
    return p


def run(args: argparse.Namespace) -> int:
    result = run_bench(args)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
        return 0
    print(f"{result['model']} ({result['backend']}); {args.prompts} questions, {args.max_tokens} tokens, greedy")
    print(f"{'path':<14} {'TTFT p50':>9} {'p95':>8} {'tok/s p50':>10} {'p95':>8}   {'TTFT x bare':>11} {'tok/s x bare':>12}")
    for path in PATHS:
        t, d = result["ttft_ms"][path], result["decode_tokens_per_s"][path]
        o = result["overhead_vs_bare"].get(path, {})
        print(f"{path:<14} {t['p50_ms']:>9} {t['p95_ms']:>8} {d.get('p50_tps', ''):>10} {d.get('p95_tps', ''):>8}   "
              f"{o.get('ttft_p50_ratio', ''):>11} {o.get('decode_tps_p50_ratio', '') or '':>12}")
    return 0
