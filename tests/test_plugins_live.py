"""Issue #3's integration test: a running daemon on the real model picks up a plugin file dropped
into the watched folder, blocks it when it breaks, takes the fix — and never reloads the model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exlsp.lsp.socket_client import Client

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[1]

GOOD = '''
from exlsp.plugins import hookimpl

__version__ = "{version}"


class Mark:
    name = "mark"
    order = 95
    kinds = frozenset({{"completion"}})

    def process(self, text, ctx):
        return text + "{marker}"


@hookimpl
def exlsp_register_postprocessors(register):
    register(Mark())
'''


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def plugin(client: Client, name: str):
    return next((p for p in client.status()["plugins"] if p["name"] == name), None)


def complete(client: Client) -> str:
    return client.complete("def add(a, b):\n    return", max_tokens=8).text


def test_plugin_file_hot_reload_with_one_model_load(tmp_path):
    plugins_dir = tmp_path / "exlsp" / "plugins"
    plugins_dir.mkdir(parents=True)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "exlsp", "daemon", "--no-demo"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        sock = tmp_path / "exlsp" / "exlsp.sock"
        wait_for(sock.is_socket, timeout=60)
        with Client(sock) as client:
            assert plugin(client, "mark") is None
            baseline = complete(client)
            assert "#MARK-1" not in baseline

            t0 = time.monotonic()
            (plugins_dir / "mark.py").write_text(GOOD.format(version="1.0", marker="#MARK-1"))
            info = wait_for(lambda: (p := plugin(client, "mark")) and p["status"] == "enabled" and p)
            assert time.monotonic() - t0 < 5
            assert info["source"] == "file" and info["version"] == "1.0"
            assert complete(client).endswith("#MARK-1")

            (plugins_dir / "mark.py").write_text("def broken(:\n")
            info = wait_for(lambda: (p := plugin(client, "mark")) and p["status"] == "blocked" and p)
            assert "SyntaxError" in info["reason"]
            assert "#MARK" not in complete(client)  # the old version is not kept silently

            (plugins_dir / "mark.py").write_text(GOOD.format(version="2.0", marker="#MARK-2"))
            wait_for(lambda: (p := plugin(client, "mark")) and p["status"] == "enabled" and p["version"] == "2.0")
            assert complete(client).endswith("#MARK-2")

            (plugins_dir / "mark.py").unlink()
            wait_for(lambda: plugin(client, "mark") is None)
            assert client.status()["model_loads"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
