"""The VS Code extension (editors/vscode): its Node unit tests and its protocol tests against the
real `exlsp serve` (the default model), run through npm so the project's one test command covers
it. Skipped only when node or npm is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "editors" / "vscode"
BIN = Path(sys.executable).parent


def _tail(text: str, lines: int = 120) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def npm() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the VS Code extension tests (Node >= 20); not found on PATH")
    return npm


def test_vscode_extension_npm_test(npm):
    env = {
        **os.environ,
        # The protocol tests start this interpreter's exlsp and must not skip for want of it.
        "EXLSP_SERVER": str(BIN / "exlsp") if (BIN / "exlsp").exists() else "",
        "EXLSP_PYTHON": sys.executable,
        "EXLSP_REQUIRE_SERVER": "1",
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }
    if not env["EXLSP_SERVER"]:
        del env["EXLSP_SERVER"]
    if not (EXT / "node_modules").is_dir():
        ci = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=EXT, env=env,
                            capture_output=True, text=True, timeout=600)
        assert ci.returncode == 0, f"npm ci failed:\n{_tail(ci.stdout)}\n{_tail(ci.stderr)}"
    run = subprocess.run([npm, "test"], cwd=EXT, env=env, capture_output=True, text=True, timeout=600)
    report = f"npm test exited {run.returncode}\n--- stdout ---\n{_tail(run.stdout, 200)}\n--- stderr ---\n{_tail(run.stderr)}"
    assert run.returncode == 0, report
    assert "# fail 0" in run.stdout, report
    assert "# skipped 0" in run.stdout, report
