"""`exlsp bench shell`: time from a shell's request to its first suggestion, through the socket.

Paths, each sending the same `suggest` request (same buffer, shell, cwd; no history):

- ``zsh``: a loop inside ONE zsh process, with exlsp.zsh's own request builder and reply parser over
  one `zsocket` connection (what the widget does while a line is typed; zsh's start-up not counted);
- ``c_client``, ``socat``, ``nc``, ``cli``: a loop inside one bash process that runs
  ``exlsp-client``, socat, ``nc -U`` or the Python CLI (``exlsp suggest``) once per request, in a
  command substitution, as exlsp.bash and a CLI user do (a new process per request);
- ``bare``: ``Assistant.suggest`` in this process on an engine of its own (no socket): the floor.

Client overhead is measured apart, without the model: a ``hello`` round trip (connect, send, read,
close) from zsh, the C client, socat and nc, and ``exlsp status --json`` (a new Python process) for the
CLI. Against the running exlsp (``--socket``, $EXLSP_SOCKET or the default path), or, if none answers
(or with ``--start``), a daemon of its own with the default model in a temporary XDG_RUNTIME_DIR.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from exlsp.runtime.errors import ExlspError

from .shell_setup import build_client, exlsp_command, find_compiler, shell_dir
from .socket_paths import is_live, resolve_socket_path

BUFFER = "git ch"

ZSH_LOOP = r"""
source "$EXLSP_ZSH" || exit 3
zmodload zsh/datetime zsh/net/socket || exit 3
EXLSP_HISTORY_LINES=0
sock=$EXLSP_SOCKET
integer i
for (( i = 1; i <= N_HELLO; i++ )); do
  t0=$EPOCHREALTIME
  zsocket $sock || exit 3
  fd=$REPLY
  print -rn -u $fd -- '{"type":"hello","id":1,"client":"zsh"}'$'\n'
  read -r -u $fd line
  exec {fd}>&-
  print -r -- "hello $(( (EPOCHREALTIME - t0) * 1000.0 ))"
done
zsocket $sock || exit 3
fd=$REPLY
for (( i = 1; i <= N_SUGGEST; i++ )); do
  _exlsp_request complete "$BENCH_BUFFER" $i
  req=${REPLY/,\"exit_status\":$_exlsp_status/}  # as the other paths: no exit status
  t0=$EPOCHREALTIME
  print -rn -u $fd -- "$req"$'\n'
  while read -r -u $fd line; do
    _exlsp_parse "$line" && [[ $_exlsp_r_id == $i && $_exlsp_r_type != delta ]] && break
  done
  print -r -- "suggest $(( (EPOCHREALTIME - t0) * 1000.0 )) $_exlsp_r_text"
done
exec {fd}>&-
"""

# One bash process; "$@" is the command of the path under test. EPOCHREALTIME: bash >= 5.0.
BASH_LOOP = r"""
kind=$1; shift
for (( i = 0; i < N; i++ )); do
  t0=$EPOCHREALTIME
  case $kind in
    stdin) out=$("$@" <<< "$BENCH_REQUEST" 2>/dev/null) ;;
    *) out=$("$@" 2>/dev/null) ;;
  esac
  t1=$EPOCHREALTIME
  printf 'x %s %s %s\n' "$t0" "$t1" "${out%%$'\n'*}"
done
"""


def percentiles(values: list[float]) -> dict[str, Any]:
    data = sorted(values)
    if not data:
        return {"n": 0}
    cuts = statistics.quantiles(data, n=100, method="inclusive") if len(data) > 1 else [data[0]] * 99
    return {
        "n": len(data),
        "p50_ms": round(statistics.median(data), 3),
        "p95_ms": round(cuts[94], 3),
        "mean_ms": round(statistics.fmean(data), 3),
        "min_ms": round(data[0], 3),
        "max_ms": round(data[-1], 3),
    }


def suggest_request(buffer: str, cwd: str, rid: int = 1) -> str:
    return json.dumps(
        {"type": "suggest", "id": rid, "buffer": buffer, "cursor": len(buffer), "shell": "zsh", "cwd": cwd,
         "history": [], "candidates": 1},
        ensure_ascii=False, separators=(",", ":"),
    )


HELLO = '{"type":"hello","id":1,"client":"bench"}'


@contextmanager
def own_daemon(args: argparse.Namespace) -> Iterator[Path]:
    """A daemon with the default (or --model) model in a temporary XDG_RUNTIME_DIR; stopped after."""
    with tempfile.TemporaryDirectory(prefix="exlsp-bench-") as tmp:
        runtime, config = Path(tmp) / "run", Path(tmp) / "config"
        runtime.mkdir(mode=0o700)
        config.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "EXLSP_SOCKET"}
        env.update(XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(config))
        cmd = [sys.executable, "-m", "exlsp", "daemon", "--no-demo", *model_options(args)]
        log = open(Path(tmp) / "daemon.log", "w+b")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sock = runtime / "exlsp" / "exlsp.sock"
        try:
            deadline = time.monotonic() + 180
            while not (sock.exists() and is_live(sock, 0.5)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise ExlspError(f"the benchmark's daemon did not start:\n{log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.05)
            yield sock
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()


def model_options(args: argparse.Namespace) -> list[str]:
    opts = []
    if args.model:
        opts += ["--model", str(args.model)]
    if args.backend != "auto":
        opts += ["--backend", args.backend]
    if args.threads:
        opts += ["--threads", str(args.threads)]
    return opts


def _parse_lines(stdout: str, tag: str) -> tuple[list[float], list[str]]:
    times, texts = [], []
    for line in stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0] == tag:
            times.append(float(parts[1]))
            texts.append(parts[2] if len(parts) > 2 else "")
    return times, texts


def run_zsh(sock: Path, cwd: str, n: int, warmup: int) -> tuple[list[float], list[str], list[float]]:
    env = dict(os.environ, EXLSP_SOCKET=str(sock), EXLSP_ZSH=str(shell_dir() / "exlsp.zsh"), BENCH_BUFFER=BUFFER,
               N_HELLO=str(n + warmup), N_SUGGEST=str(n + warmup))
    done = subprocess.run(["zsh", "-f", "-i", "-c", ZSH_LOOP], cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)
    hello, _ = _parse_lines(done.stdout, "hello")
    times, texts = _parse_lines(done.stdout, "suggest")
    if len(times) != n + warmup:
        raise ExlspError(f"the zsh loop failed (exit {done.returncode}): {done.stderr.strip()[-1000:]}")
    return times[warmup:], texts[warmup:], hello[warmup:]


def run_bash(kind: str, cmd: list[str], sock: Path, cwd: str, n: int, warmup: int, request: str = "") -> tuple[list[float], list[str]]:
    env = dict(os.environ, EXLSP_SOCKET=str(sock), N=str(n + warmup), BENCH_REQUEST=request)
    done = subprocess.run(["bash", "--noprofile", "--norc", "-c", BASH_LOOP, "bench", kind, *cmd], cwd=cwd, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    times, texts = [], []
    for line in done.stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0] == "x":
            times.append((float(parts[2]) - float(parts[1])) * 1000)
            texts.append(parts[3] if len(parts) > 3 else "")
    if len(times) != n + warmup:
        raise ExlspError(f"the bash loop for {cmd[0]} failed (exit {done.returncode}): {done.stderr.strip()[-1000:]}")
    return times[warmup:], texts[warmup:]


def _text_of(line: str) -> str:
    """The first suggestion of a raw `done` line (socat, nc) or the line itself (a client's text)."""
    if line.startswith("{"):
        try:
            return (json.loads(line).get("suggestions") or [{}])[0].get("text", "")
        except (ValueError, AttributeError, IndexError):
            return ""
    return line


async def _bare(args: argparse.Namespace, cwd: str, n: int, warmup: int) -> tuple[list[float], list[str]]:
    from exlsp.plugins.api import ShellQuery
    from exlsp.plugins.assistant import Assistant
    from exlsp.plugins.manager import PluginManager
    from exlsp.runtime import BackendConfig, load_engine, resolve_model

    from .cli import default_lane_groups

    spec = resolve_model(args.model, args.backend)
    engine = load_engine(spec, BackendConfig(n_lanes=4, n_ctx=4096, n_threads=args.threads), lane_groups=default_lane_groups(4))
    try:
        plugins = PluginManager()
        plugins.load()
        assistant = Assistant(engine, plugins)
        times, texts = [], []
        for _ in range(n + warmup):
            query = ShellQuery(buffer=BUFFER, cursor=len(BUFFER), shell="zsh", cwd=cwd, candidates=1)
            t0 = time.perf_counter()
            answer = await assistant.suggest(query)
            times.append((time.perf_counter() - t0) * 1000)
            texts.append(answer.suggestions[0].text if answer.suggestions else "")
        return times[warmup:], texts[warmup:]
    finally:
        engine.close()


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    n, warmup = args.requests, args.warmup
    t_start = time.monotonic()
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "shell",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    from exlsp.runtime.bench_typing import machine_info

    from .socket_client import Client

    skipped: dict[str, str] = {}
    # A fixed working directory: the prompt (which names it) is the same from run to run.
    cwd = os.path.realpath(tempfile.gettempdir())
    with ExitStack() as stack:
        sock = resolve_socket_path(args.socket)
        if args.start or not (sock.exists() and is_live(sock, 0.5)):
            sock = stack.enter_context(own_daemon(args))
            result["daemon"] = "started by the benchmark (default settings" + (f", {' '.join(model_options(args))})" if model_options(args) else ")")
        else:
            result["daemon"] = f"already running at {sock}"
        with Client(sock, client="bench") as c:
            status = c.status()
        result.update(model=status.get("model"), backend=status.get("backend"), machine=machine_info())
        request = suggest_request(BUFFER, cwd)
        result["config"] = {"buffer": BUFFER, "requests": n, "warmup": warmup, "request": request,
                            "threads": args.threads}
        suggest: dict[str, Any] = {}
        overhead: dict[str, Any] = {}
        texts: dict[str, str] = {}

        def record(name: str, times: list[float], got: list[str], table: dict[str, Any]) -> None:
            table[name] = percentiles(times)
            if got:
                texts[name] = _text_of(got[-1])

        if shutil.which("zsh"):
            times, got, hello = run_zsh(sock, cwd, n, warmup)
            record("zsh", times, got, suggest)
            overhead["zsh"] = percentiles(hello)
        else:
            skipped["zsh"] = "zsh not installed"

        client = None
        if find_compiler():
            client = stack.enter_context(tempfile.TemporaryDirectory(prefix="exlsp-client-"))
            client = str(build_client(Path(client) / "exlsp-client"))
            cmd = [client, "-S", "zsh", "-C", cwd, "-t", "30000", "suggest", BUFFER]
            record("c_client", *run_bash("args", cmd, sock, cwd, n, warmup), suggest)
            times, _ = run_bash("args", [client, "send", HELLO], sock, cwd, n, warmup)
            overhead["c_client"] = percentiles(times)
        else:
            skipped["c_client"] = "no C compiler"
        for tool, cmd in (("socat", ["socat", "-t", "30", "-", f"UNIX-CONNECT:{sock}"]), ("nc", ["nc", "-N", "-U", str(sock)])):
            if not shutil.which(tool):
                skipped[tool] = f"{tool} not installed"
                continue
            record(tool, *run_bash("stdin", cmd, sock, cwd, n, warmup, request), suggest)
            times, _ = run_bash("stdin", cmd, sock, cwd, n, warmup, HELLO)
            overhead[tool] = percentiles(times)
        cli = exlsp_command().split()
        if not args.no_cli:
            cli_n = args.cli_requests or n
            cmd = [*cli, "suggest", "-n", "1", "--shell", "zsh", BUFFER]
            record("cli", *run_bash("args", cmd, sock, cwd, cli_n, min(warmup, 1)), suggest)
            times, _ = run_bash("args", [*cli, "status", "--json"], sock, cwd, cli_n, min(warmup, 1))
            overhead["cli"] = percentiles(times)
        else:
            skipped["cli"] = "--no-cli"
        stack.close()  # our daemon (if any) stops before the bare engine loads

        if not args.no_bare:
            import anyio

            times, got = anyio.run(_bare, args, cwd, n, warmup)
            record("bare", times, got, suggest)
        else:
            skipped["bare"] = "--no-bare"

    bare = suggest.get("bare", {}).get("p50_ms")
    for name, row in suggest.items():
        if bare is not None and name != "bare" and "p50_ms" in row:
            row["over_bare_p50_ms"] = round(row["p50_ms"] - bare, 3)
    result["request_to_suggestion_ms"] = suggest
    result["client_overhead_ms"] = overhead
    result["client_overhead_probe"] = {
        "zsh": "zsocket connect + hello + read + close, in one zsh process (no fork)",
        "c_client": "exlsp-client send hello, a process per request from bash",
        "socat": "socat with the hello line on stdin, a process per request from bash",
        "nc": "nc -N -U with the hello line on stdin, a process per request from bash",
        "cli": "exlsp status --json (Python start-up + hello + status), a process per request",
    }
    result["suggestions"] = texts
    result["same_suggestion_everywhere"] = len(set(texts.values())) <= 1
    if skipped:
        result["skipped"] = skipped
    result["load_average"] = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    result["duration_s"] = round(time.monotonic() - t_start, 1)
    return result


def overhead_report(result: dict[str, Any]) -> dict[str, Any]:
    """The subset for bench/results/shell-client-overhead-<date>.json."""
    keys = ("benchmark", "date", "model", "backend", "machine", "daemon", "config", "client_overhead_ms",
            "client_overhead_probe", "load_average")
    out = {k: result[k] for k in keys if k in result}
    out["benchmark"] = "shell-client-overhead"
    out["request_to_answer_ms"] = {
        k: v for k, v in result.get("request_to_suggestion_ms", {}).items() if k in ("c_client", "socat", "nc", "cli", "zsh")
    }
    return out


def add_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    p = bench_subparsers.add_parser(
        "shell",
        help="time from a shell's request to its first suggestion: zsh, C client, socat, nc, CLI vs the bare engine",
    )
    p.add_argument("--model", metavar="PATH", help="model for a daemon the benchmark starts, and for the bare engine")
    p.add_argument("--backend", choices=("auto", "exllamav2", "llamacpp"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (a started daemon and the bare engine)")
    p.add_argument("--socket", help="a running exlsp's socket (default: $EXLSP_SOCKET or the per-user default)")
    p.add_argument("--start", action="store_true", help="start a daemon of its own even if one is running")
    p.add_argument("-n", "--requests", type=int, default=50, help="timed requests per path (default 50)")
    p.add_argument("--warmup", type=int, default=3, help="untimed requests first (default 3)")
    p.add_argument("--cli-requests", type=int, default=None, help="timed requests for the Python CLI (default: -n)")
    p.add_argument("--no-cli", action="store_true", help="skip the Python CLI")
    p.add_argument("--no-bare", action="store_true", help="skip the bare engine")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, help="also write the JSON to this file")
    p.add_argument("--overhead-out", type=Path, help="also write the client-overhead subset to this file")
    return p


def run(args: argparse.Namespace) -> int:
    result = run_bench(args)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    for path, content in ((args.out, text), (args.overhead_out, json.dumps(overhead_report(result), indent=2, ensure_ascii=False))):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content + "\n")
    if args.json:
        print(text)
        return 0
    print(f"{result['model']} ({result['backend']}), {result['daemon']}; buffer {BUFFER!r}")
    print(f"{'path':<10} {'suggest p50':>12} {'p95':>9} {'over bare':>10}   {'hello p50':>10} {'p95':>8}")
    names = list(dict.fromkeys([*result["request_to_suggestion_ms"], *result["client_overhead_ms"]]))
    for name in names:
        s = result["request_to_suggestion_ms"].get(name, {})
        o = result["client_overhead_ms"].get(name, {})
        print(f"{name:<10} {s.get('p50_ms', ''):>12} {s.get('p95_ms', ''):>9} {s.get('over_bare_p50_ms', ''):>10}   "
              f"{o.get('p50_ms', ''):>10} {o.get('p95_ms', ''):>8}")
    print(f"suggestions: {result['suggestions']}")
    for name, why in result.get("skipped", {}).items():
        print(f"skipped {name}: {why}")
    return 0
