"""`exlsp bench load`: many shells and a few editors on one resident model at once.

It starts a real ``exlsp daemon --no-demo`` subprocess on a temporary socket (so the memory measured
is the server's), then for ``--seconds``:

- ``--socket-clients`` shell/CLI clients on the Unix socket, each one connection in a loop of
  ``suggest``/``complete``/``chat`` requests drawn from ``--mix`` with a short think time;
- ``--lsp-clients`` typists: each an ``exlsp serve`` subprocess attached to the daemon's
  ``lsp.sock`` (what an editor launches), typing a source file a key every 150-300 ms with an
  automatic ``textDocument/inlineCompletion`` per key and ``$/cancelRequest`` for the stale one.

Every 0.5 s it samples the daemon's VmRSS/VmHWM from /proc and its queue (``status``). The report:
per kind the count, throughput, latency p50/p95/p99 (to the terminal reply; streaming kinds also to
the first delta, and the engine's own TTFT), errors by code and cancellations; memory at start,
peak and end with the slope over the second half (bounded memory shows a slope near zero); the
engine's job and pre-emption counters over the run; and the priority check: completions (socket
``complete`` and LSP inline) against chat under the same load. Exit status 1 when any request
failed (cancellations are not failures), so a CI-style run fails on errors.

Threads: llama.cpp takes every core by default, but here the load generator and the relays share
the machine with the daemon, and ggml's worker threads wait on each other at every operation: a
descheduled one stalls the whole forward pass. So the daemon gets ``cores - 1`` threads (at least
one) unless ``--threads`` says otherwise; the choice is in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from exlsp.runtime.bench_typing import machine_info
from exlsp.runtime.errors import ExlspError

from .bench_load_clients import (
    SOCKET_KINDS,
    LspPeer,
    Sample,
    Typist,
    initialize_params,
    socket_client,
)
from .bench_load_report import engine_delta, kind_summary, memory_summary, priority_check, summary
from .socket_paths import is_live

DEFAULT_MIX = "suggest=8,complete=3,chat=1"
SAMPLE_EVERY_S = 0.5
KINDS_ORDER = ("inline", "complete", "suggest", "chat", "invalid")


# ---- options -----------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """``suggest=8,complete=3,chat=1`` -> weights; a clear error for anything else."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if name not in SOCKET_KINDS:
            raise ExlspError(f"--mix: unknown request kind {name!r} (kinds: {', '.join(SOCKET_KINDS)})")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise ExlspError(f"--mix: {part!r} wants a number after '='") from None
        if not (0 <= weight < math.inf):
            raise ExlspError(f"--mix: the weight of {name} must be a finite number >= 0")
        mix[name] = weight
    mix = {k: w for k, w in mix.items() if w > 0}
    if not mix:
        raise ExlspError(f"--mix: no request kind with a positive weight in {text!r}")
    return mix


def _range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    try:
        a, b = float(lo), float(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want MS or MIN-MAX milliseconds, got {text!r}") from None
    if a < 0 or b < a:
        raise argparse.ArgumentTypeError(f"want 0 <= MIN <= MAX, got {text!r}")
    return a / 1000, b / 1000


def daemon_threads(requested: int | None, cores: int | None = None) -> int:
    """``--threads``, else every core but one for the load generator (at least one)."""
    if requested:
        return requested
    return max(1, (cores or os.cpu_count() or 1) - 1)


# ---- the daemon ------------------------------------------------------------------------------


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    sock: Path
    env: dict[str, str]
    log: Path

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def daemon_options(args: argparse.Namespace, threads: int) -> list[str]:
    opts = ["--lanes", str(args.lanes), "--ctx", str(args.ctx), "--threads", str(threads)]
    if args.model:
        opts += ["--model", str(args.model)]
    if args.backend != "auto":
        opts += ["--backend", args.backend]
    return opts


@contextlib.contextmanager
def own_daemon(args: argparse.Namespace, threads: int, tmp: Path) -> Iterator[Daemon]:
    runtime = tmp / "run"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "EXLSP_SOCKET"}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    for name in ("config", "state", "data", "cache"):  # none of the user's settings, chats or caches
        (tmp / name).mkdir()
        env[f"XDG_{name.upper()}_HOME"] = str(tmp / name)
    cmd = [sys.executable, "-m", "exlsp", "daemon", "--no-demo", *daemon_options(args, threads)]
    if args.config:
        cmd += ["--config", str(args.config)]
    if args.verbose:
        cmd.append("-v")  # into its log, whose tail a failed start shows
    log_path = tmp / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    daemon = Daemon(proc, runtime / "exlsp" / "exlsp.sock", env, log_path)
    try:
        deadline = time.monotonic() + 180
        # lsp.sock opens just after the socket: editors attach to it.
        while not all(p.exists() and is_live(p, 0.5) for p in (daemon.sock, daemon.sock.with_name("lsp.sock"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ExlspError(f"the benchmark's daemon did not start:\n{daemon.log_tail()}")
            time.sleep(0.05)
        yield daemon
    finally:
        _stop(proc, signal.SIGTERM, 15)


def _stop(proc: subprocess.Popen[bytes], sig: int, wait_s: float) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB from /proc, or None once the process is gone."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    values[name] = int(value.split()[0])
    except (OSError, ValueError):
        return None
    if "VmRSS" not in values:
        return None
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])


async def status(sock: Path, timeout_s: float = 10) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(sock), limit=2**22)
    try:
        writer.write(b'{"type":"status","id":1}\n')
        async with asyncio.timeout(timeout_s):
            while line := await reader.readline():
                msg = json.loads(line)
                if msg.get("id") == 1:
                    return msg.get("status") or {}
        raise ConnectionError("no status reply")
    finally:
        writer.close()


# ---- the run -----------------------------------------------------------------------------------


@dataclass
class Recorder:
    socket: list[Sample] = field(default_factory=list)
    inline: list[Sample] = field(default_factory=list)
    rss: list[tuple[float, int, int]] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    lsp_counters: list[dict[str, Any]] = field(default_factory=list)


async def sampler(daemon: Daemon, t_zero: float, rec: Recorder, stop: asyncio.Event) -> None:
    """Memory every tick; the queue depth every tick too, over its own connection."""
    while not stop.is_set():
        mem = read_memory(daemon.proc.pid)
        if mem is not None:
            rec.rss.append((time.monotonic() - t_zero, *mem))
        with contextlib.suppress(OSError, ConnectionError, TimeoutError, ValueError):
            rec.queued.append(int((await status(daemon.sock, 2)).get("queued") or 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


@dataclass
class Clock:
    """The load's time zero and end (monotonic), set once every editor is ready."""

    t_zero: float = 0.0
    stop_at: float = 0.0


def serve_log(tmp: Path, i: int) -> Path:
    return tmp / f"serve-{i}.log"


@contextlib.asynccontextmanager
async def lsp_transport(daemon: Daemon, args: argparse.Namespace, tmp: Path, i: int) -> AsyncIterator[LspPeer]:
    """An editor's connection: an ``exlsp serve`` that attaches to the daemon, or lsp.sock itself."""
    if args.lsp_direct:
        reader, writer = await asyncio.open_unix_connection(str(daemon.sock.with_name("lsp.sock")), limit=2**22)
        peer = LspPeer(reader, writer)
        try:
            yield peer
        finally:
            await peer.close()
        return
    # -v: the serve says on stderr that it attached (checked after `initialize`).
    cmd = [sys.executable, "-m", "exlsp", "serve", "-v", *daemon_options(args, daemon_threads(args.threads))]
    with open(serve_log(tmp, i), "wb") as err:
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    stderr=err, env=daemon.env, limit=2**22, start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None
    peer = LspPeer(proc.stdout, proc.stdin)
    try:
        yield peer
    finally:
        await peer.close()  # EOF on its stdin ends the relay
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def start_editor(peer: LspPeer, args: argparse.Namespace, tmp: Path, i: int) -> None:
    await peer.call("initialize", initialize_params(), timeout_s=120)
    peer.notify("initialized", {})
    if not args.lsp_direct:
        log = serve_log(tmp, i).read_text(errors="replace")
        if "attaching to the exlsp process" not in log:
            # One that loaded a model of its own would measure something else entirely.
            raise ExlspError(f"exlsp serve #{i} did not attach to the benchmark's daemon:\n{log[-1500:]}")


async def run_editor(peer: LspPeer, typist: Typist, clock: Clock, timeout_s: float, rec: Recorder) -> None:
    await typist.run(clock.stop_at, timeout_s)
    with contextlib.suppress(RuntimeError, ConnectionError, TimeoutError):
        rec.lsp_counters.append((await peer.call("exlsp/status", {}, timeout_s=10)).get("lsp", {}))
    with contextlib.suppress(RuntimeError, ConnectionError, TimeoutError):
        await peer.call("shutdown", None, timeout_s=10)
    peer.notify("exit", None)


async def drive(args: argparse.Namespace, daemon: Daemon, tmp: Path, mix: dict[str, float]) -> dict[str, Any]:
    rec, clock = Recorder(), Clock()
    source = Path(args.file).read_text(encoding="utf-8", errors="replace")
    async with contextlib.AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(lsp_transport(daemon, args, tmp, i)) for i in range(args.lsp_clients)]
        # Editors attach before the clock starts.
        await asyncio.gather(*(start_editor(p, args, tmp, i) for i, p in enumerate(peers)))
        before = await status(daemon.sock)
        clock.t_zero = time.monotonic()
        clock.stop_at = clock.t_zero + args.seconds
        stop = asyncio.Event()
        sampling = asyncio.ensure_future(sampler(daemon, clock.t_zero, rec, stop))
        cwd = os.path.realpath(tempfile.gettempdir())
        tasks = [
            *(asyncio.ensure_future(socket_client(daemon.sock, mix, seed=i, t_zero=clock.t_zero, stop_at=clock.stop_at,
                                                  think_s=args.think_ms, timeout_s=args.request_timeout, cwd=cwd,
                                                  out=rec.socket))
              for i in range(args.socket_clients)),
            *(asyncio.ensure_future(run_editor(
                peer, Typist(peer, f"file:///bench/editor{i}", source, random.Random(1000 + i), clock.t_zero,
                             args.keystroke_ms, args.line_pause_ms / 1000, rec.inline,
                             position=i / max(1, args.lsp_clients), open_wait=not args.no_open_wait),
                clock, args.request_timeout, rec))
              for i, peer in enumerate(peers)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            wall = time.monotonic() - clock.t_zero
            stop.set()
            await sampling
        after = await status(daemon.sock)
    return {"rec": rec, "before": before, "after": after, "wall_s": wall}


def _validate(args: argparse.Namespace) -> None:
    if args.socket:
        raise ExlspError("exlsp bench load always starts a daemon of its own; --socket is not used")
    if args.seconds <= 0:
        raise ExlspError("--seconds must be > 0")
    if args.socket_clients < 0 or args.lsp_clients < 0 or args.socket_clients + args.lsp_clients == 0:
        raise ExlspError("--socket-clients and --lsp-clients must be >= 0, and not both 0")
    if args.request_timeout <= 0:
        raise ExlspError("--request-timeout must be > 0")
    if args.lsp_clients and not Path(args.file).is_file():
        raise ExlspError(f"file not found: {args.file}")


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    _validate(args)
    mix = parse_mix(args.mix) if args.socket_clients else {}
    threads = daemon_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="exlsp-load-") as tmpdir:
        tmp = Path(tmpdir)
        with own_daemon(args, threads, tmp) as daemon:
            measured = asyncio.run(drive(args, daemon, tmp, mix))
            alive = daemon.proc.poll() is None
            log_tail = "" if alive else daemon.log_tail()
    rec: Recorder = measured["rec"]
    seconds = float(args.seconds)
    by_kind: dict[str, list[Sample]] = {}
    for s in [*rec.inline, *rec.socket]:
        by_kind.setdefault(s.kind, []).append(s)
    kinds = {k: kind_summary(by_kind[k], seconds) for k in KINDS_ORDER if k in by_kind}
    everything = [*rec.inline, *rec.socket]
    after = measured["after"]
    lsp_server: dict[str, Any] = {}
    for counters in rec.lsp_counters:
        for k, v in counters.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                lsp_server[k] = lsp_server.get(k, 0) + v
    result: dict[str, Any] = {
        "benchmark": "load",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": after.get("model"),
        "backend": after.get("backend"),
        "machine": machine_info(),
        "config": {
            "socket_clients": args.socket_clients, "lsp_clients": args.lsp_clients, "seconds": args.seconds,
            "mix": mix, "think_ms": [round(x * 1000) for x in args.think_ms],
            "keystroke_ms": [round(x * 1000) for x in args.keystroke_ms], "line_pause_ms": args.line_pause_ms,
            "request_timeout_s": args.request_timeout, "file": str(args.file), "open_wait": not args.no_open_wait,
            "lsp_transport": "lsp.sock directly" if args.lsp_direct else "exlsp serve, attached (relay)",
            "daemon": {"threads": threads, "threads_from": "--threads" if args.threads else "cores - 1",
                       "lanes": args.lanes, "ctx": args.ctx},
        },
        "kinds": kinds,
        "totals": {
            "sent": len(everything),
            "answered": sum(s.outcome == "done" for s in everything),
            "cancelled": sum(s.outcome == "cancelled" for s in everything),
            "errors": sum(s.outcome == "error" for s in everything),
            "throughput_per_s": round(sum(s.outcome == "done" for s in everything) / seconds, 2),
        },
        "priority": priority_check(kinds),
        "memory": memory_summary(rec.rss, seconds),
        "queue": {"samples": len(rec.queued), "mean": round(statistics.fmean(rec.queued), 2) if rec.queued else None,
                  "max": max(rec.queued) if rec.queued else None},
        "engine": {**engine_delta(measured["before"], after, measured["wall_s"]), "decode_tok_s": after.get("decode_tok_s"),
                   "cache_hit_rate": after.get("cache_hit_rate")},
        "lsp_server": lsp_server,
        "daemon_alive_at_end": alive,
        "engine_alive_at_end": after.get("alive", True) is not False,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "wall_s": round(measured["wall_s"], 1),
    }
    if log_tail:
        result["daemon_log_tail"] = log_tail
    return result


def failed(result: dict[str, Any]) -> bool:
    return bool(result["totals"]["errors"]) or not (result["daemon_alive_at_end"] and result["engine_alive_at_end"])


# ---- command line ------------------------------------------------------------------------------


def add_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    from .cli import _add_model_options

    p = bench_subparsers.add_parser(
        "load", help="many socket clients and editors at once: throughput, latency percentiles, errors, memory",
    )
    _add_model_options(p)
    p._option_string_actions["--threads"].help = "llama.cpp threads of the daemon (default: cores - 1, at least 1)"
    p._option_string_actions["--socket"].help = argparse.SUPPRESS  # the benchmark's daemon has a socket of its own
    p.add_argument("--socket-clients", type=int, default=50, metavar="N", help="shell/CLI clients (default 50)")
    p.add_argument("--lsp-clients", type=int, default=4, metavar="M", help="typing editors (default 4)")
    p.add_argument("--seconds", type=float, default=60.0, metavar="T", help="length of the load (default 60)")
    p.add_argument("--mix", default=DEFAULT_MIX,
                   help=f"socket request weights (default {DEFAULT_MIX}; kinds: {', '.join(SOCKET_KINDS)})")
    p.add_argument("--think-ms", type=_range, default=_range("50-250"), metavar="MIN-MAX",
                   help="a socket client's pause between requests (default 50-250)")
    p.add_argument("--keystroke-ms", type=_range, default=_range("150-300"), metavar="MIN-MAX",
                   help="a typist's pause between keys (default 150-300)")
    p.add_argument("--line-pause-ms", type=float, default=600.0, help="extra pause after a newline (default 600)")
    p.add_argument("--request-timeout", type=float, default=120.0, metavar="S",
                   help="a request unanswered this long is an error (default 120)")
    p.add_argument("--file", type=Path, default=Path(__file__).resolve().parents[1] / "runtime" / "engine.py",
                   help="the source file the editors type (default: exlsp's runtime/engine.py)")
    p.add_argument("--no-open-wait", action="store_true",
                   help="editors start typing at once in a newly opened file, without waiting for its first suggestion")
    p.add_argument("--lsp-direct", action="store_true",
                   help="editors connect to lsp.sock themselves instead of through `exlsp serve`")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, help="also write the JSON to this file")
    return p


def run(args: argparse.Namespace) -> int:
    result = run_bench(args)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text if args.json else summary(result))
    if failed(result):
        sys.stderr.write(f"exlsp: bench load: {result['totals']['errors']} requests failed"
                         + ("" if result["daemon_alive_at_end"] else ", and the daemon died")
                         + ("" if result["engine_alive_at_end"] else ", and the engine thread died") + "\n")
        return 1
    return 0
