"""`exlsp bench load` (lsp/bench_load*.py): its statistics and options,
a short real run against a daemon of its own with shells and an attached editor, and a run whose
request mix the server must refuse, which has to fail."""

from __future__ import annotations

import json
import random

import pytest

from exlsp.lsp import bench_load, cli, wire
from exlsp.lsp import bench_load_report as report
from exlsp.lsp.bench_load_clients import Sample, TypingPlan, socket_request, utf16_position
from exlsp.runtime.errors import ExlspError


def parse(*argv: str):
    return cli.build_parser().parse_args(["bench", "load", *argv])


def test_parser_defaults_and_options():
    args = parse()
    assert (args.socket_clients, args.lsp_clients, args.seconds, args.mix) == (50, 4, 60.0, bench_load.DEFAULT_MIX)
    assert args.think_ms == (0.05, 0.25) and args.keystroke_ms == (0.15, 0.3)
    assert args.threads is None and args.lanes == 4 and not args.lsp_direct and not args.no_open_wait
    args = parse("--socket-clients", "3", "--lsp-clients", "0", "--seconds", "2.5", "--think-ms", "10",
                 "--keystroke-ms", "100-200", "--threads", "1", "--json", "--out", "x.json")
    assert (args.socket_clients, args.lsp_clients, args.seconds, args.threads) == (3, 0, 2.5, 1)
    assert args.think_ms == (0.01, 0.01) and args.keystroke_ms == (0.1, 0.2)
    with pytest.raises(SystemExit):
        parse("--keystroke-ms", "300-100")


def test_parse_mix():
    assert bench_load.parse_mix(bench_load.DEFAULT_MIX) == {"suggest": 8.0, "complete": 3.0, "chat": 1.0}
    assert bench_load.parse_mix(" chat , suggest=0.5,complete=0 ") == {"chat": 1.0, "suggest": 0.5}
    for bad, why in (("sugest=1", "unknown request kind"), ("chat=x", "wants a number"),
                     ("chat=-1", ">= 0"), ("chat=inf", "finite"), ("chat=nan", "finite"), ("chat=0", "no request kind"), ("", "no request kind")):
        with pytest.raises(ExlspError, match=why):
            bench_load.parse_mix(bad)


def test_bad_options_fail_before_anything_starts(tmp_path):
    for argv, why in ((["--seconds", "0"], "--seconds"), (["--socket-clients", "0", "--lsp-clients", "0"], "not both 0"),
                      (["--socket", str(tmp_path / "s")], "--socket is not used"),
                      (["--file", str(tmp_path / "missing.py")], "file not found")):
        with pytest.raises(ExlspError, match=why):
            bench_load.run_bench(parse(*argv))
    assert cli.main(["bench", "load", "--mix", "nope=1", "--seconds", "1"]) == 2


def test_daemon_threads_leave_a_core_to_the_load():
    assert bench_load.daemon_threads(None, 2) == 1
    assert bench_load.daemon_threads(None, 1) == 1
    assert bench_load.daemon_threads(None, 16) == 15
    assert bench_load.daemon_threads(3, 2) == 3


def test_latency_stats():
    stats = report.latency_stats(float(x) for x in range(100, 0, -1))
    assert stats["n"] == 100 and stats["p50_ms"] == 50.5
    assert stats["p95_ms"] == 95.05 and stats["p99_ms"] == 99.01
    assert (stats["mean_ms"], stats["max_ms"]) == (50.5, 100.0)
    assert report.latency_stats([]) == {"n": 0}
    one = report.latency_stats([7.0])
    assert one["p50_ms"] == one["p99_ms"] == 7.0


def test_kind_summary_counts_errors_by_code_and_not_cancellations():
    samples = [
        Sample("chat", 0.0, latency_ms=100.0, ttft_ms=10.0, engine_ttft_ms=9.0),
        Sample("chat", 0.1, latency_ms=300.0, ttft_ms=30.0, engine_ttft_ms=29.0, empty=True),
        Sample("chat", 0.2, outcome="cancelled", latency_ms=5.0),
        Sample("chat", 0.3, outcome="error", code="internal", latency_ms=1.0),
        Sample("chat", 0.4, outcome="error", code="timeout"),
        Sample("chat", 0.5, outcome="error", code="timeout"),
    ]
    row = report.kind_summary(samples, seconds=4.0)
    assert (row["sent"], row["answered"], row["empty_answers"], row["cancelled"], row["errors"]) == (6, 2, 1, 1, 3)
    assert row["errors_by_code"] == {"internal": 1, "timeout": 2}
    assert row["throughput_per_s"] == 0.5
    assert row["latency_ms"]["n"] == 2 and row["latency_ms"]["p50_ms"] == 200.0  # answered ones only
    assert row["ttft_ms"]["p50_ms"] == 20.0 and row["engine_ttft_ms"]["max_ms"] == 29.0
    plain = report.kind_summary([Sample("suggest", 0.0, latency_ms=50.0)], seconds=1.0)
    assert "ttft_ms" not in plain and plain["errors"] == 0


def test_memory_summary_and_slope():
    flat = [(t * 0.5, 500 * 1024, 510 * 1024) for t in range(20)]
    mem = report.memory_summary(flat, seconds=10)
    assert (mem["samples"], mem["start_mib"], mem["peak_mib"], mem["end_mib"]) == (20, 500.0, 510.0, 500.0)
    assert mem["second_half_growth_mib"] == 0.0 and mem["second_half_slope_mib_per_min"] == 0.0
    leak = [(t * 0.5, (500 + t) * 1024, (500 + t) * 1024) for t in range(20)]  # 1 MiB every 0.5 s
    mem = report.memory_summary(leak, seconds=10)
    assert mem["second_half_slope_mib_per_min"] == 120.0 and mem["second_half_growth_mib"] == 9.0
    assert mem["peak_mib"] == 519.0
    assert report.memory_summary([], 10) == {"samples": 0}
    assert report.slope_per_min([(1.0, 5.0)]) is None


def test_priority_check():
    def kinds(complete, inline, chat):
        return {"complete": {"ttft_ms": {"p50_ms": complete}}, "inline": {"latency_ms": {"p50_ms": inline}},
                "chat": {"ttft_ms": {"p50_ms": chat}, "latency_ms": {"p50_ms": chat * 2}}}

    held = report.priority_check(kinds(50.0, 80.0, 1000.0))
    assert held["held"] is True and held["chat_over_complete_ttft_p50"] == 20.0
    assert report.priority_check(kinds(50.0, 2000.0, 1000.0))["held"] is False  # inline slower than chat
    assert report.priority_check({"complete": {"ttft_ms": {"p50_ms": 5.0}}})["held"] is None


def test_engine_delta():
    before = {"jobs_submitted": 10, "preemptions": 1, "prefill_seconds": 1.0, "decode_seconds": 1.0}
    after = {"jobs_submitted": 25, "preemptions": 4, "prefill_seconds": 2.0, "decode_seconds": 4.0}
    delta = report.engine_delta(before, after, wall_s=8.0)
    assert (delta["jobs_submitted"], delta["preemptions"], delta["busy_fraction"]) == (15, 3, 0.5)


def test_socket_requests_are_valid_wire_requests_and_invalid_is_not():
    rng = random.Random(0)
    for kind, cls in (("suggest", wire.SuggestRequest), ("complete", wire.CompleteRequest), ("chat", wire.ChatRequest)):
        assert isinstance(wire.decode_request(json.dumps(socket_request(kind, 7, rng, "/tmp")).encode()), cls)
    with pytest.raises(wire.WireError) as exc:
        wire.decode_request(json.dumps(socket_request("invalid", 8, rng, "/tmp")).encode())
    assert (exc.value.code, exc.value.id) == (wire.INVALID_REQUEST, 8)


def test_typing_plan_leaves_nothing_right_of_the_cursor():
    source = "def a():\n    x = 1\n    return x\n\n\ndef b():\n    pass\n"
    for fraction in (0.0, 0.3, 0.6, 0.99):
        plan = TypingPlan.at(source, fraction, chars=12)
        assert plan.before + plan.block + plan.after == source
        assert plan.block and not plan.block.startswith(" ") and not plan.block.endswith("\n")
        assert plan.after == "" or plan.after.startswith("\n")
    assert utf16_position("a\nb\U0001f600c", 6) == {"line": 1, "character": 4}  # the emoji is 2 units


@pytest.mark.model
def test_short_run_with_shells_and_an_attached_editor(tmp_path):
    typed = tmp_path / "typed.py"
    typed.write_text("".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(12)))
    out = tmp_path / "load.json"
    args = parse("--socket-clients", "4", "--lsp-clients", "1", "--seconds", "4", "--mix", "suggest=2,complete=1,chat=1",
                 "--file", str(typed), "--out", str(out), "--json")
    assert bench_load.run(args) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "load" and result["model"] and result["machine"]["cores"]
    assert result["config"]["lsp_transport"].startswith("exlsp serve")
    assert result["config"]["daemon"]["threads"] >= 1
    assert result["daemon_alive_at_end"] is True
    assert result["totals"]["errors"] == 0
    for kind in ("inline", "suggest", "complete", "chat"):
        row = result["kinds"][kind]
        assert row["answered"] >= 1, (kind, row)
        assert row["latency_ms"]["p50_ms"] > 0 and row["errors_by_code"] == {}
    assert result["kinds"]["chat"]["ttft_ms"]["n"] >= 1 and result["kinds"]["complete"]["engine_ttft_ms"]["n"] >= 1
    assert result["kinds"]["inline"]["sent"] >= 5  # the typist typed, a request per key
    mem = result["memory"]
    assert mem["samples"] >= 6 and 20 < mem["start_mib"] <= mem["peak_mib"]
    assert result["queue"]["samples"] >= 6
    assert result["engine"]["jobs_submitted"] >= result["totals"]["answered"] - result["kinds"]["inline"]["answered"]
    assert result["priority"]["held"] in (True, False)  # measured; the medium run reports the verdict


@pytest.mark.model
def test_a_mix_the_server_refuses_fails_the_run(tmp_path, capsys):
    """Errors are counted where they happen: the refused kind, not the editor beside it (here on
    lsp.sock directly, the path without the relay)."""
    typed = tmp_path / "typed.py"
    typed.write_text("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n")
    out = tmp_path / "broken.json"
    code = cli.main(["bench", "load", "--socket-clients", "2", "--lsp-clients", "1", "--lsp-direct", "--seconds", "1.5",
                     "--mix", "suggest=1,invalid=1", "--file", str(typed), "--out", str(out)])
    assert code == 1
    result = json.loads(out.read_text())
    assert result["config"]["lsp_transport"] == "lsp.sock directly"
    assert result["kinds"]["inline"]["answered"] >= 1 and result["kinds"]["inline"]["errors"] == 0
    invalid = result["kinds"]["invalid"]
    assert invalid["errors"] == invalid["sent"] >= 1
    assert invalid["errors_by_code"] == {"invalid_request": invalid["sent"]}
    assert result["kinds"]["suggest"]["errors"] == 0 and result["daemon_alive_at_end"]
    assert result["totals"]["errors"] == invalid["errors"]
    captured = capsys.readouterr()
    assert "invalid" in captured.out and f"{invalid['errors']} requests failed" in captured.err
