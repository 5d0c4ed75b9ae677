"""`exlsp bench gpu`: ExLlamaV2 on this machine's NVIDIA GPU, with random-weight FP16 models of
real shapes (Qwen2.5-Coder-1.5B, then Llama-3-8B if time allows) made on the spot.

For each model, in one run: the time to write and to load it; decode and prefill tokens/s of
exllamav2's own dynamic generator (unpaged: no flash-attn) and of exlsp's engine on the same
loaded model; the latency of a completion through the Unix socket and through the language
server, against the engine's own time for it; VRAM used. For the card: device-to-device copy
bandwidth, and from it the batch-1 decode limit, weight bytes per token / bandwidth, which the
measured decode speeds are compared with.

Random weights decode as fast as trained ones (the same bytes move), so speeds are real even
though the text is not. The JSON is rewritten after every stage: a run cut short by a timeout
still leaves what it measured.

The stages run in a ``Measurer`` (the GPU) under ``run_bench`` (the plan, the budget and the
JSON); the tests drive ``run_bench`` with a fake measurer.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from . import testmodels
from .testmodels import ModelShape

NO_CUDA = "no CUDA device: exlsp bench gpu needs an NVIDIA GPU"
DEFAULT_MODELS = ("qwen2.5-coder-1.5b", "llama-3-8b")
COPY_BYTES = 1 << 30  # 1 GiB read, 1 GiB written per copy
# Nominal memory bandwidth (bytes/s) of cards the JSON may name, first match wins; for comparison
# only: the limit itself is computed from the measured copy bandwidth.
SPEC_BANDWIDTH = (
    ("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12),
    ("A100-SXM4-80GB", 2.04e12), ("A100 80GB PCIe", 1.94e12), ("A100", 1.56e12),
    ("L40S", 0.864e12), ("RTX 4090", 1.008e12),
)  # fmt: skip


# ---- arithmetic (tested on any machine) -----------------------------------------------------------


def weight_bytes(shape: ModelShape, dtype_bytes: int = 2) -> int:
    return shape.n_params() * dtype_bytes


def weight_bytes_per_token(shape: ModelShape, dtype_bytes: int = 2) -> int:
    """Bytes of weights one batch-1 decode step reads: every matrix and norm once, but of the
    embedding table only the one row looked up (exllamav2 keeps that table in system RAM)."""
    embed = shape.vocab * shape.hidden
    return (shape.n_params() - embed + shape.hidden) * dtype_bytes


def copy_bandwidth(bytes_copied: int, seconds: float) -> float:
    """Bytes/s of a device-to-device copy: every byte is read once and written once."""
    return 2 * bytes_copied / seconds


def bandwidth_limit_tok_s(bytes_per_token: float, bandwidth: float) -> float:
    """Batch-1 decode cannot beat streaming the weights once per token."""
    return bandwidth / bytes_per_token


def spec_bandwidth(device_name: str) -> float | None:
    return next((value for key, value in SPEC_BANDWIDTH if key in device_name), None)


def ratios(entry: dict[str, Any]) -> dict[str, float]:
    """The comparisons the JSON exists for, from whatever stages of ``entry`` were measured."""
    out: dict[str, float] = {}
    limit = entry.get("bandwidth_limit_tok_s")
    bare, engine = entry.get("bare") or {}, entry.get("engine") or {}

    def put(name: str, num: Any, den: Any) -> None:
        if isinstance(num, (int, float)) and isinstance(den, (int, float)) and den > 0:
            out[name] = round(num / den, 4)

    put("bare_decode_vs_limit", bare.get("decode_tok_s"), limit)
    put("engine_decode_vs_limit", engine.get("decode_tok_s"), limit)
    put("engine_vs_bare_decode", engine.get("decode_tok_s"), bare.get("decode_tok_s"))
    put("engine_vs_bare_prefill", engine.get("prefill_tok_s"), bare.get("prefill_tok_s"))
    for door in ("socket", "lsp"):
        d = entry.get(door) or {}
        put(f"{door}_vs_engine_latency", d.get("request_p50_ms"), d.get("engine_p50_ms"))
    return out


def median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically (a reader never sees half a file)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class Budget:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self._clock, self._t0 = seconds, clock, clock()

    def elapsed(self) -> float:
        return self._clock() - self._t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


def estimate_s(shape: ModelShape, measured: dict[str, Any], measured_shape: ModelShape) -> float:
    """Seconds a model would take, scaled by weight bytes from a model already measured."""
    spent = measured.get("stage_s")
    if not spent:
        return float("inf")
    return spent * weight_bytes(shape) / weight_bytes(measured_shape)


# ---- the plan --------------------------------------------------------------------------------------


class Measurer(Protocol):
    def gpu_info(self) -> dict[str, Any]: ...

    def prepare(self) -> dict[str, Any]:
        """One-time costs (importing exllamav2), kept out of the first model's numbers."""
        ...

    def copy_bandwidth(self) -> dict[str, Any]: ...

    def model(self, shape: ModelShape, entry: dict[str, Any], save: Callable[[], None]) -> None:
        """Measure ``shape``, filling ``entry`` stage by stage and calling ``save`` after each."""
        ...


def run_bench(
    shapes: Sequence[tuple[str, ModelShape]], measurer: Measurer, budget: Budget, out: Path | None,
    settings: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    result: dict[str, Any] = {
        "benchmark": "gpu",
        "version": 1,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
        "settings": settings,
        "gpu": measurer.gpu_info(),
        "models": {},
    }

    def save() -> None:
        result["elapsed_s"] = round(budget.elapsed(), 1)
        for entry in result["models"].values():
            if "skipped" not in entry:
                entry["ratios"] = ratios(entry)
        write_json(out, result)

    try:
        save()
        try:
            result["gpu"].update(measurer.prepare())
        except Exception as exc:  # most often exllamav2's extension failing to build or load
            result["status"], result["error"] = "failed", f"{type(exc).__name__}: {exc}"[:2000]
            save()
            return result
        copy = result["copy_bandwidth"] = measurer.copy_bandwidth()
        save()
        _measure_models(shapes, measurer, budget, result, copy, save)
    except BaseException:  # a timeout's SIGTERM or Ctrl-C: say so in the file, keep what was measured
        result["status"] = "interrupted"
        save()
        raise
    result["status"] = "complete"
    save()
    return result


def _measure_models(shapes: Sequence[tuple[str, ModelShape]], measurer: Measurer, budget: Budget,
                    result: dict[str, Any], copy: dict[str, Any], save: Callable[[], None]) -> None:  # fmt: skip
    previous: tuple[ModelShape, dict[str, Any]] | None = None
    memory = (result["gpu"].get("memory_total_gb") or 0) * 1e9
    for name, shape in shapes:
        if memory and weight_bytes(shape) * 1.2 > memory:
            result["models"][name] = {"skipped": f"{weight_bytes(shape) / 1e9:.1f} GB of weights do not fit {memory / 1e9:.0f} GB"}
            save()
            continue
        if previous is not None:
            need = estimate_s(shape, previous[1], previous[0])
            if need > budget.left():
                result["models"][name] = {"skipped": f"needs ~{need:.0f} s, {budget.left():.0f} s of the budget left"}
                save()
                continue
        entry: dict[str, Any] = {"shape": asdict(shape), "params": shape.n_params(),
                                 "weight_bytes": weight_bytes(shape),
                                 "weight_bytes_per_token": weight_bytes_per_token(shape)}  # fmt: skip
        if copy.get("bytes_per_s"):
            entry["bandwidth_limit_tok_s"] = round(bandwidth_limit_tok_s(entry["weight_bytes_per_token"], copy["bytes_per_s"]), 1)
        result["models"][name] = entry
        t0 = budget.elapsed()
        try:
            measurer.model(shape, entry, save)
        except Exception as exc:  # one model failing must still leave the others' numbers
            entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
        entry["stage_s"] = round(budget.elapsed() - t0, 1)
        save()
        if "error" not in entry:
            previous = (shape, entry)


# ---- the GPU ---------------------------------------------------------------------------------------


def cuda_status() -> tuple[bool, str]:
    """(True, "") when a CUDA device and exllamav2 are there; never imports exllamav2."""
    if importlib.util.find_spec("torch") is None:
        return False, NO_CUDA + " (torch is not installed)"
    import torch

    if not torch.cuda.is_available():
        return False, NO_CUDA
    if importlib.util.find_spec("exllamav2") is None:
        return False, "exllamav2 is not installed: pip install 'exlsp[gpu]'"
    return True, ""


class GpuMeasurer:
    """Every stage on the real GPU. ``budget`` only trims repetitions, never correctness."""

    def __init__(self, args: argparse.Namespace, budget: Budget) -> None:
        self.args = args
        self.budget = budget

    @property
    def torch(self) -> Any:
        import torch

        return torch

    def gpu_info(self) -> dict[str, Any]:
        torch = self.torch
        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name(0)
        spec = spec_bandwidth(name)
        return {
            "name": name,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
            "memory_total_gb": round(props.total_memory / 1e9, 2),
            "multiprocessors": props.multi_processor_count,
            "driver": _nvidia_smi("driver_version"),
            "cuda_runtime": torch.version.cuda,
            "torch": torch.__version__,
            "exllamav2": _version("exllamav2"),
            "flash_attn": importlib.util.find_spec("flash_attn") is not None,
            "spec_bandwidth_gb_s": round(spec / 1e9) if spec else None,
        }

    def prepare(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        importlib.import_module("exllamav2")  # loads (or first builds) its CUDA extension
        return {"exllamav2_import_s": round(time.perf_counter() - t0, 2)}

    def copy_bandwidth(self) -> dict[str, Any]:
        torch = self.torch
        n = COPY_BYTES // 2
        src = torch.empty(n, dtype=torch.float16, device="cuda").normal_()
        dst = torch.empty_like(src)
        dst.copy_(src)  # warm up
        torch.cuda.synchronize()
        seconds = []
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1000)
        del src, dst
        torch.cuda.empty_cache()
        best = min(seconds)
        return {"bytes": COPY_BYTES, "reps": len(seconds), "best_s": round(best, 6),
                "median_s": round(statistics.median(seconds), 6),
                "bytes_per_s": copy_bandwidth(COPY_BYTES, best),
                "gb_s": round(copy_bandwidth(COPY_BYTES, best) / 1e9, 1)}  # fmt: skip

    def model(self, shape: ModelShape, entry: dict[str, Any], save: Callable[[], None]) -> None:
        from .backends.base import BackendConfig
        from .backends.exllamav2 import ExLlamaV2Backend

        torch, args = self.torch, self.args
        folder = Path(tempfile.mkdtemp(prefix="exlsp-bench-", dir=_workdir(args.workdir, weight_bytes(shape))))
        try:
            t0 = time.perf_counter()
            testmodels.write_shape(folder, shape, weights="random", device="cuda", seed=0)
            entry["write_s"] = round(time.perf_counter() - t0, 2)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            save()
            config = BackendConfig(n_lanes=2, n_ctx=args.ctx, n_batch=BackendConfig().n_batch)
            t0 = time.perf_counter()
            backend = ExLlamaV2Backend.load(folder, config)
            entry["load_s"] = round(time.perf_counter() - t0, 2)
            entry["vram"] = self._vram()
            entry["exllamav2_config"] = _model_flags(backend)
            save()
            try:
                entry["bare"] = self._bare(backend, shape)
                save()
                entry["engine"], entry["socket"], entry["lsp"] = {}, {}, {}
                asyncio.run(self._through_exlsp(backend, shape, entry, save))
                entry["vram"] = self._vram()
            finally:
                backend.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            gc.collect()
            torch.cuda.empty_cache()

    # -- stages --

    def _vram(self) -> dict[str, float]:
        torch = self.torch
        free, total = torch.cuda.mem_get_info()
        return {"max_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
                "reserved_gb": round(torch.cuda.memory_reserved() / 1e9, 2),
                "used_gb": round((total - free) / 1e9, 2), "total_gb": round(total / 1e9, 2)}  # fmt: skip

    def _prompts(self, shape: ModelShape, n: int, count: int, seed: int) -> list[list[int]]:
        import numpy as np

        rng = np.random.default_rng(seed)
        high = shape.n_tokens - len(testmodels.SPECIALS[shape.arch][0])
        return [rng.integers(0, high, size=n).tolist() for _ in range(count)]

    def _bare(self, backend: Any, shape: ModelShape) -> dict[str, Any]:
        """exllamav2's dynamic generator on the backend's model (same weights, same config), with
        a cache of its own: what exllamav2 itself reaches here."""
        torch, args = self.torch, self.args
        from exllamav2 import ExLlamaV2Cache
        from exllamav2.generator import ExLlamaV2DynamicGenerator, ExLlamaV2DynamicJob, ExLlamaV2Sampler

        model, tokenizer = backend._model, backend._tokenizer  # the loaded model, not a second copy
        seq = -(-(args.prompt_tokens + args.decode_tokens + 16) // 256) * 256  # the generator wants pages of 256
        cache = ExLlamaV2Cache(model, max_seq_len=seq)
        generator = ExLlamaV2DynamicGenerator(model=model, cache=cache, tokenizer=tokenizer, paged=False,
                                              max_batch_size=1)  # fmt: skip
        greedy = ExLlamaV2Sampler.Settings.greedy()

        def job(ids: list[int], new: int) -> dict[str, Any]:
            generator.enqueue(ExLlamaV2DynamicJob(input_ids=torch.tensor([ids], dtype=torch.long),
                                                  max_new_tokens=new, min_new_tokens=new, gen_settings=greedy))  # fmt: skip
            last: dict[str, Any] = {}
            while generator.num_remaining_jobs():
                for r in generator.iterate():
                    if r.get("eos"):
                        last = r
            return last

        try:
            job(self._prompts(shape, 32, 1, 1)[0], 8)  # warm up kernels and the sampler
            decode, prefill, cached = [], [], []
            # time_generate runs from just before the forward pass of the last prompt token to the
            # last sample: new_tokens forward passes. time_prefill covers the prompt but that token.
            for ids in self._prompts(shape, 128, args.reps, 2):
                r = job(ids, args.decode_tokens)
                decode.append(r["new_tokens"] / r["time_generate"])
            for ids in self._prompts(shape, args.prompt_tokens, args.reps, 3):
                r = job(ids, 1)
                prefill.append((r["prompt_tokens"] - 1) / r["time_prefill"])
                cached.append(r.get("cached_tokens", 0))
        finally:
            generator = cache = None  # frees the generator's cache before the engine's turn
            gc.collect()
            torch.cuda.empty_cache()
        return {"decode_tok_s": median(decode), "prefill_tok_s": median(prefill), "decode_runs": [round(x, 1) for x in decode],
                "prefill_runs": [round(x, 1) for x in prefill], "prefill_cached_tokens": cached,
                "paged": False, "decode_tokens": args.decode_tokens, "prompt_tokens": args.prompt_tokens}  # fmt: skip

    async def _through_exlsp(self, backend: Any, shape: ModelShape, entry: dict[str, Any], save: Callable[[], None]) -> None:
        from .engine import Engine
        from .types import GenerationRequest

        args = self.args
        engine = Engine(backend, lane_groups={"completion": 1, "chat": 1})
        try:
            gen = lambda ids, n: GenerationRequest(prompt=ids, max_tokens=n, stop_at_eos=False, add_bos=False,  # noqa: E731
                                                   reuse_cache=False, lane_group="chat")  # fmt: skip
            await engine.complete(gen(self._prompts(shape, 32, 1, 1)[0], 8))
            decode, prefill, prefill_big = [], [], []
            for ids in self._prompts(shape, 128, args.reps, 2):
                final = await engine.complete(gen(ids, args.decode_tokens))
                # n tokens sampled, n - 1 forward passes (the first token's logits came with the prompt)
                decode.append((final.generated_tokens - 1) / (final.decode_ms / 1000))
            for ids in self._prompts(shape, args.prompt_tokens, args.reps, 3):
                final = await engine.complete(gen(ids, 1))
                prefill.append(final.prefilled_tokens / (final.prefill_ms / 1000))
            n_batch = getattr(backend, "_n_batch", None)
            if n_batch is not None:
                backend._n_batch = args.prompt_tokens  # the same model, one chunk per prompt: no second load
                try:
                    for ids in self._prompts(shape, args.prompt_tokens, args.reps, 4):
                        final = await engine.complete(gen(ids, 1))
                        prefill_big.append(final.prefilled_tokens / (final.prefill_ms / 1000))
                finally:
                    backend._n_batch = n_batch
            entry["engine"] = {"decode_tok_s": median(decode), "prefill_tok_s": median(prefill),
                               "prefill_n_batch": n_batch, "prefill_tok_s_one_chunk": median(prefill_big),
                               "decode_runs": [round(x, 1) for x in decode], "prefill_runs": [round(x, 1) for x in prefill]}  # fmt: skip
            save()
            if self.budget.left() > 30:
                entry["socket"] = await _socket_latency(engine, args.requests)
                save()
                entry["lsp"] = await _lsp_latency(engine, args.requests)
                save()
            else:
                entry["socket"] = entry["lsp"] = {"skipped": "out of time"}
        finally:
            engine.close(timeout=30)  # closes the backend too


def _typing_prefixes(n: int) -> list[str]:
    """What an editor sends while a user types a function: each prefix one character longer."""
    base = CODE_START
    return [base + TYPED[: i + 1] for i in range(n)]


CODE_START = (
    "import os\nimport sys\n\n\ndef read_config(path):\n    \"\"\"Read a key=value file into a dict.\"\"\"\n"
    "    values = {}\n    with open(path) as handle:\n        for line in handle:\n"
)
TYPED = "            key, _, value = line.partition('=')\n            values[key.strip()] = value.strip()\n"


def _assistant(engine: Any) -> Any:
    from exlsp.plugins.assistant import Assistant
    from exlsp.plugins.manager import PluginManager

    manager = PluginManager(local_dirs=[], entry_points=True)
    manager.load()
    return Assistant(engine, manager)


async def _socket_latency(engine: Any, n: int) -> dict[str, Any]:
    """Request -> done through the Unix socket (Python client, in process), against the engine's
    own total time for the same job (reported in the done reply)."""
    import anyio

    from exlsp.lsp import socket_client
    from exlsp.lsp.socket_server import SocketServer

    folder = Path(tempfile.mkdtemp(prefix="exl-", dir="/tmp"))
    path = folder / "run" / "exlsp.sock"
    server = SocketServer(path, _assistant(engine))
    request_ms, engine_ms, tokens = [], [], []
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            async with socket_client.connect(path, client="bench-gpu") as client:
                for prefix in _typing_prefixes(n + 1):
                    t0 = time.perf_counter()
                    done = await client.complete(prefix, language="python", max_tokens=32)
                    request_ms.append((time.perf_counter() - t0) * 1000)
                    engine_ms.append(done.total_ms or 0.0)
                    tokens.append(done.generated_tokens or 0)
            tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _latency(request_ms[1:], engine_ms[1:], tokens[1:])


async def _lsp_latency(engine: Any, n: int) -> dict[str, Any]:
    """textDocument/inlineCompletion over in-process pipes (pygls client and server), typing one
    character per request, against the engine's total time for the job behind each answer."""
    from lsprotocol import types

    from exlsp.lsp.inprocess import connect, initialize_params, inline_params, open_document
    from exlsp.lsp.server import ServerState, build_server

    assistant = _assistant(engine)
    state = ServerState(plugins=assistant.plugins, file_settings={"completion": {"maxTokens": 32}})
    server = build_server(state)
    state.set_assistant(assistant)
    uri = "file:///bench/config.py"
    request_ms, engine_ms, tokens = [], [], []
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        client.initialized(types.InitializedParams())
        previous = None
        for i, prefix in enumerate(_typing_prefixes(n + 1)):
            await open_document(client, f"{uri}.{i}", prefix)  # a fresh document: no typing-through cache
            line = prefix.count("\n")
            col = len(prefix) - (prefix.rfind("\n") + 1)
            t0 = time.perf_counter()
            await client.text_document_inline_completion_async(inline_params(f"{uri}.{i}", line, col))
            elapsed = (time.perf_counter() - t0) * 1000
            final = assistant.last_completion
            if final is None or final is previous:
                continue  # answered without the model
            previous = final
            request_ms.append(elapsed)
            engine_ms.append(final.total_ms)
            tokens.append(final.generated_tokens)
    return _latency(request_ms[1:], engine_ms[1:], tokens[1:])


def _latency(request_ms: list[float], engine_ms: list[float], tokens: list[int]) -> dict[str, Any]:
    over = [r - e for r, e in zip(request_ms, engine_ms)]
    return {"requests": len(request_ms), "request_p50_ms": median(request_ms), "engine_p50_ms": median(engine_ms),
            "overhead_p50_ms": median(over), "overhead_max_ms": round(max(over), 3) if over else None,
            "generated_tokens_p50": median(tokens)}  # fmt: skip


def _model_flags(backend: Any) -> dict[str, Any]:
    cfg = backend._model.config
    return {"no_sdpa": bool(getattr(cfg, "no_sdpa", False)), "no_flash_attn": bool(getattr(cfg, "no_flash_attn", False)),
            "max_seq_len": cfg.max_seq_len, "max_input_len": cfg.max_input_len}  # fmt: skip


def _workdir(asked: Path | None, need_bytes: int) -> str:
    """Where a model's files go: RAM-backed /dev/shm when it has room (the load then reads no
    disk), else the temporary directory."""
    if asked is not None:
        asked.mkdir(parents=True, exist_ok=True)
        return str(asked)
    for folder in ("/dev/shm", tempfile.gettempdir()):
        try:
            if shutil.disk_usage(folder).free > need_bytes * 1.2 + (1 << 30):
                return folder
        except OSError:
            continue
    return tempfile.gettempdir()


def _nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15, check=True)  # fmt: skip
        return out.stdout.strip().splitlines()[0] or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- the command -----------------------------------------------------------------------------------


def add_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    p = bench_subparsers.add_parser(
        "gpu", help="ExLlamaV2 on this GPU with random-weight FP16 models of real shapes: bare vs exlsp"
    )
    p.add_argument("--out", type=Path, help="write the JSON here (rewritten after every stage)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated shapes, in order (default {','.join(DEFAULT_MODELS)}; any of "
                        f"{', '.join(testmodels.SHAPES)})")  # fmt: skip
    p.add_argument("--budget-s", type=float, default=215.0,
                   help="start no model that would not finish within this many seconds of the start (default 215)")
    p.add_argument("--prompt-tokens", type=int, default=2048, help="prefill measurement prompt (default 2048)")
    p.add_argument("--decode-tokens", type=int, default=256, help="tokens per decode measurement (default 256)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each measurement (default 3)")
    p.add_argument("--requests", type=int, default=10, help="timed requests per front door (default 10)")
    p.add_argument("--ctx", type=int, default=4096, help="context per engine lane (default 4096)")
    p.add_argument("--workdir", type=Path, help="where model files are written (default /dev/shm if it has room)")
    p.add_argument("--json", action="store_true", help="print the JSON")
    return p


def run(args: argparse.Namespace) -> int:
    ok, why = cuda_status()
    if not ok:
        print(why, file=sys.stderr)
        return 2
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in testmodels.SHAPES]
    if unknown:
        print(f"unknown model shape(s): {', '.join(unknown)} (known: {', '.join(testmodels.SHAPES)})", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)  # `timeout` stops us: clean up, mark the JSON interrupted
    budget = Budget(args.budget_s)
    settings = {k: getattr(args, k) for k in ("prompt_tokens", "decode_tokens", "reps", "requests", "ctx", "budget_s")}
    from .backends.exllamav2 import stdout_to_stderr

    with stdout_to_stderr():  # exllamav2 prints; stdout carries only the JSON asked for
        result = run_bench([(n, testmodels.SHAPES[n]) for n in names], GpuMeasurer(args, budget), budget,
                           args.out, settings)  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_summary(result)
    failed = "error" in result or any("error" in m for m in result["models"].values())
    return 1 if failed else 0


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _print_summary(result: dict[str, Any]) -> None:
    gpu = result["gpu"]
    if "error" in result:
        print(f"{gpu['name']}: {result['error']}")
        return
    print(f"{gpu['name']} (driver {gpu.get('driver')}, CUDA {gpu.get('cuda_runtime')}): "
          f"copy {result.get('copy_bandwidth', {}).get('gb_s')} GB/s")  # fmt: skip
    for name, m in result["models"].items():
        if "skipped" in m or "error" in m:
            print(f"{name}: {m.get('skipped') or m.get('error')}")
            continue
        bare, eng = m.get("bare", {}), m.get("engine", {})
        print(f"{name}: load {m.get('load_s')} s, limit {m.get('bandwidth_limit_tok_s')} tok/s; "
              f"decode bare {bare.get('decode_tok_s')} / exlsp {eng.get('decode_tok_s')} tok/s; "
              f"prefill bare {bare.get('prefill_tok_s')} / exlsp {eng.get('prefill_tok_s')} tok/s; "
              f"socket +{m.get('socket', {}).get('overhead_p50_ms')} ms, lsp +{m.get('lsp', {}).get('overhead_p50_ms')} ms")  # fmt: skip
