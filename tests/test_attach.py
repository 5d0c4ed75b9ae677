"""One model per user: a second `exlsp serve` attaches to the process that owns the model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exlsp.lsp.socket_client import Client
from test_lsp_stdio import Reader, frame

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[1]


def serve(env) -> tuple[subprocess.Popen, Reader]:
    proc = subprocess.Popen([sys.executable, "-m", "exlsp", "serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    return proc, Reader(proc.stdout)


def lsp_session(proc: subprocess.Popen, reader: Reader, uri: str) -> dict:
    def send(obj):
        proc.stdin.write(frame(obj))
        proc.stdin.flush()

    send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
          "params": {"processId": None, "rootUri": None, "capabilities": {}}})
    assert "inlineCompletionProvider" in reader.wait_for(lambda m: m.get("id") == 1)["result"]["capabilities"]
    send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": uri, "languageId": "python", "version": 1, "text": "def add(a, b):\n    return"}}})
    for i in range(100):
        send({"jsonrpc": "2.0", "id": 10 + i, "method": "exlsp/status", "params": {}})
        if reader.wait_for(lambda m, i=i: m.get("id") == 10 + i)["result"]["ready"]:
            break
        time.sleep(0.1)
    send({"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion", "params": {
        "textDocument": {"uri": uri}, "position": {"line": 1, "character": 10},
        "context": {"triggerKind": 1}}})
    return reader.wait_for(lambda m: m.get("id") == 2)


def shutdown(proc: subprocess.Popen, reader: Reader) -> None:
    proc.stdin.write(frame({"jsonrpc": "2.0", "id": 99, "method": "shutdown"}))
    proc.stdin.flush()
    reader.wait_for(lambda m: m.get("id") == 99)
    proc.stdin.write(frame({"jsonrpc": "2.0", "method": "exit"}))
    proc.stdin.flush()


def test_second_serve_attaches_and_owner_lingers(tmp_path):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    sock = tmp_path / "exlsp" / "exlsp.sock"
    first, r1 = serve(env)
    second = None
    try:
        assert "items" in lsp_session(first, r1, "file:///a.py")["result"]
        deadline = time.monotonic() + 20
        while not (sock.is_socket() and (tmp_path / "exlsp" / "lsp.sock").is_socket()):
            assert time.monotonic() < deadline, "the first serve never opened its sockets"
            time.sleep(0.05)
        second, r2 = serve(env)
        assert "items" in lsp_session(second, r2, "file:///b.py")["result"]
        with Client(sock) as c:
            status = c.status()
        assert status["model_loads"] == 1  # one model for both editors
        assert status["requests"]["completions"] >= 2
        assert (tmp_path / "exlsp" / "lsp.sock").stat().st_mode & 0o777 == 0o600

        shutdown(first, r1)  # the owner's own editor leaves; the attached one keeps working
        time.sleep(0.5)
        assert first.poll() is None
        r2.messages.clear()
        assert "items" in lsp_session(second, r2, "file:///c.py")["result"]
        shutdown(second, r2)
        assert second.wait(timeout=20) == 0
        assert first.wait(timeout=30) == 0  # keep-alive over, the owner exits cleanly
        assert not sock.exists()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
