"""`exlsp bench shell` (lsp/bench_shell.py): its statistics, that every path sends the same request,
and a short run against a daemon of its own."""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import pytest

from exlsp.lsp import bench_shell, wire
from exlsp.lsp.shell_setup import shell_dir


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="exlsp bench")
    sub = parser.add_subparsers(dest="bench", required=True)
    bench_shell.add_parser(sub)
    return parser.parse_args(["shell", *argv])


def test_parser_defaults():
    args = parse()
    assert (args.requests, args.warmup, args.start, args.no_cli, args.no_bare) == (50, 3, False, False, False)
    assert args.model is None and args.backend == "auto" and args.out is None
    args = parse("-n", "5", "--start", "--threads", "1", "--json", "--out", "x.json")
    assert (args.requests, args.start, args.threads, args.json, str(args.out)) == (5, True, 1, True, "x.json")


def test_percentiles():
    stats = bench_shell.percentiles([float(x) for x in range(1, 101)])
    assert stats["n"] == 100
    assert stats["p50_ms"] == 50.5
    assert 95 <= stats["p95_ms"] <= 96
    assert (stats["min_ms"], stats["max_ms"], stats["mean_ms"]) == (1.0, 100.0, 50.5)
    assert bench_shell.percentiles([]) == {"n": 0}
    one = bench_shell.percentiles([7.0])
    assert one["p50_ms"] == one["p95_ms"] == 7.0


def test_every_path_sends_the_same_request(tmp_path):
    """socat/nc send suggest_request(); zsh builds its own (minus the exit status, as in the
    benchmark); the CLI and the C client send the same fields. Same prompt, same lane."""
    raw = bench_shell.suggest_request(bench_shell.BUFFER, str(tmp_path))
    ours = wire.decode_request(raw.encode())
    script = (
        f"source {shell_dir() / 'exlsp.zsh'}; EXLSP_HISTORY_LINES=0; _exlsp_request complete {bench_shell.BUFFER!r} 1; "
        'print -r -- "${REPLY/,\\"exit_status\\":$_exlsp_status/}"'
    )
    env = {k: v for k, v in os.environ.items() if k != "EXLSP_SOCKET"}
    out = subprocess.run(["zsh", "-f", "-i", "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                         stdin=subprocess.DEVNULL, timeout=30)
    zsh = wire.decode_request(out.stdout.strip().encode())
    assert isinstance(zsh, wire.SuggestRequest) and isinstance(ours, wire.SuggestRequest)
    assert zsh.exit_status is None
    assert zsh == ours


def test_overhead_report_is_a_subset():
    result = {
        "benchmark": "shell", "date": "d", "model": "m", "machine": {}, "client_overhead_ms": {"zsh": {"p50_ms": 0.5}},
        "request_to_suggestion_ms": {"zsh": {"p50_ms": 100}, "bare": {"p50_ms": 90}, "c_client": {"p50_ms": 101}},
    }
    report = bench_shell.overhead_report(result)
    assert report["benchmark"] == "shell-client-overhead"
    assert report["client_overhead_ms"] == {"zsh": {"p50_ms": 0.5}}
    assert set(report["request_to_answer_ms"]) == {"zsh", "c_client"}


@pytest.mark.model
def test_short_run_against_its_own_daemon(tmp_path):
    out = tmp_path / "shell.json"
    overhead = tmp_path / "overhead.json"
    args = parse("-n", "3", "--warmup", "1", "--cli-requests", "2", "--start", "--threads", "1",
                 "--out", str(out), "--overhead-out", str(overhead), "--json")
    assert bench_shell.run(args) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "shell" and result["model"] and result["machine"]["cores"]
    assert result["daemon"].startswith("started by the benchmark")
    paths = result["request_to_suggestion_ms"]
    assert set(paths) == {"zsh", "c_client", "socat", "nc", "cli", "bare"}
    for name, row in paths.items():
        assert row["n"] == (2 if name == "cli" else 3)
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"]
    assert set(result["client_overhead_ms"]) == {"zsh", "c_client", "socat", "nc", "cli"}
    for row in result["client_overhead_ms"].values():
        assert row["p50_ms"] > 0
    texts = result["suggestions"]
    assert all(t.startswith(bench_shell.BUFFER) for t in texts.values()), texts
    # One daemon, one request, greedy decoding: every socket path got the same answer.
    assert len({texts[k] for k in ("zsh", "c_client", "socat", "nc", "cli")}) == 1, texts
    assert json.loads(overhead.read_text())["benchmark"] == "shell-client-overhead"
