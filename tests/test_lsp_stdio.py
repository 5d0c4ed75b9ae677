"""`exlsp serve` as a subprocess over stdio: stdout carries only LSP frames, malformed frames are
survived, shutdown/exit ends the process cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[1]


def frame(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


class Reader:
    """Parses every byte of stdout as LSP frames; anything else fails the test."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.messages: list[dict] = []
        self.garbage: list[bytes] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            header = self.stream.readline()
            if not header:
                return
            if not header.startswith(b"Content-Length: "):
                self.garbage.append(header)
                continue
            length = int(header.split(b":")[1])
            rest = self.stream.readline()
            while rest not in (b"\r\n", b""):
                if not rest.startswith(b"Content-Type:"):
                    self.garbage.append(rest)
                rest = self.stream.readline()
            body = self.stream.read(length)
            with self.lock:
                self.messages.append(json.loads(body))

    def wait_for(self, pred, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for m in self.messages:
                    if pred(m):
                        return m
            time.sleep(0.02)
        raise AssertionError(f"no matching message; got {self.messages}")


def test_stdio_only_frames_and_survives_garbage(tmp_path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exlsp", "serve", "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=ROOT, env=env,
    )
    reader = Reader(proc.stdout)
    send = lambda b: (proc.stdin.write(b), proc.stdin.flush())  # noqa: E731
    send(frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"processId": None, "rootUri": None, "capabilities": {}}}))
    init = reader.wait_for(lambda m: m.get("id") == 1)
    assert "inlineCompletionProvider" in init["result"]["capabilities"]
    send(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
    # malformed: invalid JSON body, then a custom request with invalid params
    bad = b"{not json"
    send(b"Content-Length: %d\r\n\r\n%s" % (len(bad), bad))
    send(frame({"jsonrpc": "2.0", "id": 2, "method": "exlsp/chat", "params": {"messages": 5}}))
    err = reader.wait_for(lambda m: m.get("id") == 2)
    assert err["error"]["code"] == -32602
    # a standard request with params of the wrong shape gets an answer too (pygls alone drops it)
    send(frame({"jsonrpc": "2.0", "id": 5, "method": "textDocument/inlineCompletion", "params": [1, 2]}))
    assert reader.wait_for(lambda m: m.get("id") == 5)["error"]["code"] == -32602
    send(frame({"jsonrpc": "2.0", "id": 6, "method": "textDocument/inlineCompletion", "params": {"position": 3}}))
    assert reader.wait_for(lambda m: m.get("id") == 6)["error"]["code"] == -32602
    for i in range(300):  # the model loads in the background; status says when it is ready
        send(frame({"jsonrpc": "2.0", "id": 100 + i, "method": "exlsp/status", "params": {}}))
        st = reader.wait_for(lambda m, i=i: m.get("id") == 100 + i)
        if st["result"]["ready"]:
            break
        time.sleep(0.1)
    assert st["result"]["ready"] and st["result"]["model_loads"] == 1
    send(frame({"jsonrpc": "2.0", "id": 4, "method": "shutdown"}))
    reader.wait_for(lambda m: m.get("id") == 4)
    send(frame({"jsonrpc": "2.0", "method": "exit"}))
    assert proc.wait(timeout=20) == 0
    assert reader.garbage == []
    stderr = proc.stderr.read().decode()
    assert "Traceback" not in stderr
