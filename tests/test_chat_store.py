"""Chat sessions: the SQLite store (atomic writes under SIGKILL, a corrupt file moved aside, an
unwritable state directory), the session semantics (history sent to the model, re-sent history not
stored twice, a cancelled answer kept as far as it got), and end to end through a real
``exlsp daemon`` killed with SIGKILL and restarted, and through the language server."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from pygls.exceptions import JsonRpcException

from exlsp.lsp import socket_client, wire
from exlsp.lsp.inprocess import connect as lsp_connect
from exlsp.lsp.inprocess import initialize_params
from exlsp.lsp.server import ServerState, build_server
from exlsp.lsp.socket_server import SocketServer
from exlsp.plugins.api import Answer, ChatMessage, ChatQuery
from exlsp.plugins.assistant import Assistant
from exlsp.plugins.chat_sessions import ChatSessions, fit_history
from exlsp.plugins.chat_store import (
    SCHEMA_VERSION,
    SESSION_ID_RE,
    ChatStore,
    SessionError,
    StoredMessage,
    default_path,
)
from exlsp.plugins.manager import PluginManager
from exlsp.runtime import Completion

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def state_home(tmp_path, monkeypatch) -> Path:
    """Never the user's own ~/.local/state."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


@pytest.fixture
def short_dir():
    # AF_UNIX paths hold ~104 bytes; pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="exl-cs-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# ---- the store ------------------------------------------------------------------------------------


def test_session_round_trip_and_private_files(state_home):
    store = ChatStore.default()
    assert store.path == state_home / "exlsp" / "chat.sqlite3" == default_path()
    first = store.append("proj/a", [StoredMessage("system", "be brief"), StoredMessage("user", "  \nHow do I\tcount lines?\nthanks")])
    assert (first.id, first.title, first.messages) == ("proj/a", "How do I count lines?", 2)
    time.sleep(0.01)
    store.append("b", [StoredMessage("user", "x" * 200)])
    later = store.append("proj/a", [StoredMessage("assistant", "wc -l", complete=False)])
    assert later.created == first.created and later.updated > first.updated and later.messages == 3
    assert [s.id for s in store.sessions()] == ["proj/a", "b"]  # newest first
    assert [s.id for s in store.sessions(limit=1)] == ["proj/a"]
    assert len(store.session("b").title) == 80
    got = store.messages("proj/a")
    assert [(m.role, m.content, m.complete) for m in got] == [
        ("system", "be brief", True), ("user", "  \nHow do I\tcount lines?\nthanks", True), ("assistant", "wc -l", False)]
    assert [m.content for m in store.messages("proj/a", limit=1)] == ["wc -l"]
    assert store.session("nope") is None and store.messages("nope") == []
    for bad in ("", "a b", "-x", "x" * 129, "é", "a\nb"):
        with pytest.raises(SessionError):
            store.append(bad, [StoredMessage("user", "hi")])
        assert not SESSION_ID_RE.fullmatch(bad)
    with pytest.raises(SessionError):
        store.append("c", [StoredMessage("tool", "hi")])
    assert store.session("c") is None  # the failed write left nothing, not even the session
    assert store.delete("b") is True and store.delete("b") is False
    assert [s.id for s in store.sessions()] == ["proj/a"]
    assert store.describe()["persisted"] is True
    store.close()
    # Private: the directory 0700, the database and its WAL 0600; the schema version is recorded.
    directory = state_home / "exlsp"
    assert directory.stat().st_mode & 0o777 == 0o700
    for f in directory.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert _rows(store.path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert _rows(store.path, "PRAGMA journal_mode") == [("wal",)]
    # And it is all there after a reopen.
    again = ChatStore.default()
    assert [(s.id, s.messages) for s in again.sessions()] == [("proj/a", 3)]
    again.close()


def test_the_wire_and_the_store_accept_the_same_session_ids():
    pattern = wire.SessionId.__metadata__[0].pattern
    assert pattern == "^" + SESSION_ID_RE.pattern + "$"


KILL_MID_TRANSACTION = r"""
import sys, time
from pathlib import Path
from exlsp.plugins.chat_store import ChatStore, StoredMessage

store = ChatStore(Path(sys.argv[1]))
store.append("s", [StoredMessage("user", "before")])
inserts = []

def trace(sql):
    if sql.lstrip().startswith("INSERT INTO messages"):
        inserts.append(1)
        if len(inserts) == 4:  # three 0.9 MB messages written, the transaction still open
            print("mid-transaction", flush=True)
            time.sleep(60)

store._conn.set_trace_callback(trace)
big = "x" * 900_000
store.append("s", [StoredMessage("assistant", big), StoredMessage("user", big), StoredMessage("user", big),
                   StoredMessage("user", "never")])
print("committed", flush=True)
"""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def test_a_write_killed_mid_transaction_leaves_the_previous_state(tmp_path):
    path = tmp_path / "exlsp" / "chat.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", KILL_MID_TRANSACTION, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(proc, 30)
        if line != "mid-transaction\n":
            proc.kill()
            pytest.fail(f"the writer did not stop mid-transaction: {line!r} {proc.communicate()[1][-2000:]}")
        # The half-written transaction did reach the disk (SQLite spilled its pages to the WAL) ...
        assert Path(f"{path}-wal").stat().st_size > 500_000  # a committed small turn is a few KB
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
    # ... and none of it counts: the store is exactly as the last commit left it, and healthy.
    store = ChatStore(path)
    assert [(s.id, s.messages) for s in store.sessions()] == [("s", 1)]
    assert [m.content for m in store.messages("s")] == ["before"]
    assert store.describe()["persisted"] is True and store.warning is None
    assert list(path.parent.glob("*.corrupt-*")) == []
    assert store.append("s", [StoredMessage("assistant", "after")]).messages == 2
    store.close()


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database, it is a text file\n" * 100)


def _future_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, shiny_new_column BLOB)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


def _damaged_pages(path: Path) -> None:
    store = ChatStore(path)
    for i in range(40):
        store.append(f"s{i}", [StoredMessage("user", f"question {i} " * 50)])
    store.close()  # checkpoints the WAL into the file
    page = _rows(path, "PRAGMA page_size")[0][0]
    with path.open("r+b") as f:  # scribble over the b-tree pages after the schema page
        f.seek(page * 2)
        f.write(b"\xa5" * page * 3)


@pytest.mark.parametrize("damage", [_garbage, _future_schema, _damaged_pages], ids=lambda f: f.__name__.strip("_"))
def test_an_unusable_store_is_moved_aside_with_a_warning(state_home, caplog, damage):
    path = default_path()
    path.parent.mkdir(parents=True)
    damage(path)
    before = path.read_bytes()
    caplog.set_level(logging.WARNING, logger="exlsp.plugins.chat_store")
    store = ChatStore.default()
    info = store.append("fresh", [StoredMessage("user", "hi")])  # never a crash
    assert info.messages == 1
    moved = list(path.parent.glob("chat.sqlite3.corrupt-*"))
    assert len(moved) == 1 and not moved[0].name.endswith(("-wal", "-shm"))
    assert moved[0].read_bytes() == before  # kept for the user, byte for byte
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "moved aside" in warnings[0] and str(moved[0]) in warnings[0]
    assert store.describe()["persisted"] is True and "moved aside" in store.warning
    store.close()
    assert [(s.id, s.messages) for s in ChatStore.default().sessions()] == [("fresh", 1)]


def test_an_unwritable_state_dir_keeps_sessions_in_memory_with_one_warning(state_home, caplog):
    state_home.parent.mkdir(parents=True, exist_ok=True)
    state_home.write_text("a file where the state directory should be")  # not writable, even for root
    caplog.set_level(logging.WARNING, logger="exlsp.plugins.chat_store")
    store = ChatStore.default()
    store.append("a", [StoredMessage("user", "hi")])
    store.append("a", [StoredMessage("assistant", "hello")])
    assert [(s.id, s.messages) for s in store.sessions()] == [("a", 2)]
    assert store.describe()["persisted"] is False and "cannot use" in store.warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not saved" in warnings[0]
    assert state_home.is_file()  # nothing was created or moved


# ---- session semantics (a scripted assistant) --------------------------------------------------


class ScriptedAssistant:
    """Records the conversation each chat was given; answers "answer N" in two deltas."""

    def __init__(self, hang_after_first: bool = False) -> None:
        self.seen: list[list[tuple[str, str]]] = []
        self.hang_after_first = hang_after_first

    async def chat(self, query: ChatQuery, on_delta) -> Answer:
        self.seen.append([(m.role, m.content) for m in query.messages])
        n = len(self.seen)
        await on_delta(f"answer {n}")
        if self.hang_after_first:
            await anyio.sleep_forever()
        await on_delta(".")
        return Answer(text=f"answer {n}.", stats=Completion(text="", tokens=[], stop_reason="eos"), stop_reason="eos")


async def _nothing(text: str) -> None:
    return None


def q(*messages: tuple[str, str], session: str | None = "s") -> ChatQuery:
    return ChatQuery(messages=[ChatMessage(r, c) for r, c in messages], session=session)


async def test_history_is_sent_and_resent_history_is_not_stored_twice():
    sessions = ChatSessions(ChatStore(None))
    bot = ScriptedAssistant()
    await sessions.chat(bot, q(("system", "be brief"), ("user", "A")), _nothing)
    # A client that re-sends the whole conversation with its new turn ...
    await sessions.chat(bot, q(("system", "be brief"), ("user", "A"), ("assistant", "answer 1."), ("user", "B")), _nothing)
    # ... and one that sends only the new turn: the model sees the same kind of conversation.
    await sessions.chat(bot, q(("user", "C")), _nothing)
    convo = [("system", "be brief"), ("user", "A"), ("assistant", "answer 1."), ("user", "B"), ("assistant", "answer 2."),
             ("user", "C")]
    assert bot.seen == [convo[:2], convo[:4], convo]
    stored = [(m.role, m.content) for m in sessions.store.messages("s")]
    assert stored == convo + [("assistant", "answer 3.")]
    # Re-sending exactly the stored conversation adds nothing: refused, nothing stored.
    with pytest.raises(SessionError, match="adds no message"):
        await sessions.chat(bot, q(*stored), _nothing)
    assert len(sessions.store.messages("s")) == 7 and len(bot.seen) == 3
    # Without a session: stateless, nothing stored.
    await sessions.chat(bot, q(("user", "D"), session=None), _nothing)
    assert bot.seen[-1] == [("user", "D")] and [s.id for s in await sessions.list()] == ["s"]


async def test_a_turn_left_unanswered_by_a_crash_can_be_answered_again():
    sessions = ChatSessions(ChatStore(None))
    sessions.store.append("s", [StoredMessage("user", "A")])  # the process died before answering
    bot = ScriptedAssistant()
    await sessions.chat(bot, q(("user", "A")), _nothing)
    assert bot.seen == [[("user", "A")]]
    assert [(m.role, m.content) for m in sessions.store.messages("s")] == [("user", "A"), ("assistant", "answer 1.")]


async def test_user_turn_is_stored_before_the_answer_and_a_cancelled_answer_is_kept():
    sessions = ChatSessions(ChatStore(None))
    bot = ScriptedAssistant(hang_after_first=True)
    received: list[str] = []

    async def on_delta(text: str) -> None:
        received.append(text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sessions.chat, bot, q(("user", "tell me a story")), on_delta)
        with anyio.fail_after(5):
            while not received:
                await anyio.sleep(0.005)
        # Mid-answer: the user's turn is already on record.
        assert [(m.role, m.content) for m in sessions.store.messages("s")] == [("user", "tell me a story")]
        tg.cancel_scope.cancel()
    stored = sessions.store.messages("s")
    assert [(m.role, m.content, m.complete) for m in stored] == [
        ("user", "tell me a story", True), ("assistant", "answer 1", False)]


class _Model:
    n_ctx = 100

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(text.split())


def test_a_long_history_keeps_the_system_prompt_and_the_newest_turns():
    msgs = [ChatMessage("system", "sys")] + [ChatMessage("user", f"turn {i} " + "w " * 20) for i in range(10)]
    kept = fit_history(msgs, _Model(), reserve=40)
    assert kept[0].content == "sys" and kept[-1] is msgs[-1]
    assert 1 < len(kept) < len(msgs)
    assert [m.content for m in kept[1:]] == [m.content for m in msgs[-(len(kept) - 1):]]
    assert sum(_Model.count_tokens(m.content) + 8 for m in kept) <= 60
    assert fit_history(msgs[:2], _Model(), reserve=40) == msgs[:2]


# ---- through the socket and the language server, real default model -----------------------------


def _assistant(engine) -> Assistant:
    manager = PluginManager(local_dirs=[], entry_points=True)
    manager.load()
    return Assistant(engine, manager)


@pytest.mark.model
async def test_socket_cancel_keeps_the_partial_answer_real_model(real_engine, short_dir):
    sessions = ChatSessions(ChatStore.default())
    path = short_dir / "exlsp.sock"
    server = SocketServer(path, _assistant(real_engine), sessions=sessions)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        async with socket_client.connect(path) as c:
            pending = await c.open(wire.ChatRequest, messages=[wire.ChatMessage("user", "Write a long story about a cat.")],
                                   max_tokens=300, session="story")
            received = ""
            async for reply in pending:
                if isinstance(reply, wire.DeltaReply):
                    received += reply.text
                    if len(received) > 20:
                        await pending.cancel()
            assert isinstance(pending.terminal, wire.CancelledReply)
            shown = await c.request(wire.SessionRequest, session="story")
            user, answer = shown.messages
            assert (user.role, user.content, user.complete) == ("user", "Write a long story about a cat.", True)
            assert answer.role == "assistant" and not answer.complete
            assert answer.content.startswith(received) and len(answer.content) < 300 * 8
            with pytest.raises(socket_client.RequestFailed) as missing:
                await c.request(wire.SessionRequest, session="nope")
            assert missing.value.code == wire.NOT_FOUND
            with pytest.raises(socket_client.RequestFailed) as bad:
                await c.request(wire.SessionRequest, session="no spaces")
            assert bad.value.code == wire.INVALID_REQUEST
            assert (await c.status())["chat_sessions"]["persisted"] is True
        tg.cancel_scope.cancel()
    sessions.store.close()


def _env(short_dir: Path, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EXLSP_SOCKET"}
    env.update(XDG_RUNTIME_DIR=str(short_dir), XDG_CONFIG_HOME=str(short_dir / "config"), XDG_STATE_HOME=str(state))
    return env


class Daemon:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exlsp", "daemon", "--no-demo", "--ctx", "2048", "--lanes", "4"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        )
        err, deadline = "", time.monotonic() + 90
        while "press Ctrl-C" not in err and time.monotonic() < deadline:
            ch = self.proc.stderr.read(1)
            if not ch:
                break
            err += ch
        assert "model resident (socket" in err, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exlsp", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)


@pytest.mark.model
def test_end_to_end_a_session_survives_sigkill_of_the_daemon(short_dir, state_home, daemons):
    env = _env(short_dir, state_home)
    first = Daemon(env)
    daemons.append(first)
    sock = short_dir / "exlsp" / "exlsp.sock"
    # Turn 1 through the CLI, as a user would.
    cli = _cli(env, "chat", "--session", "ada", "--max-tokens", "8", "My name is Ada. Remember my name.")
    assert cli.returncode == 0, cli.stderr
    with socket_client.Client(sock, timeout=60) as c:
        # Turn 2 is under way when the daemon dies: the question is already saved.
        replies = c.stream(wire.ChatRequest, messages=[wire.ChatMessage("user", "Write a long poem about the sea.")],
                           max_tokens=400, session="ada")
        assert isinstance(next(replies), wire.DeltaReply)
        first.kill()
        with pytest.raises(socket_client.ServerGone):
            for _ in replies:
                pass

    second = Daemon(env)
    daemons.append(second)
    listed = _cli(env, "sessions")
    assert listed.returncode == 0 and listed.stdout.startswith("ada ") and "3 messages" in listed.stdout, listed
    assert "My name is Ada. Remember my name." in listed.stdout
    with socket_client.Client(sock, timeout=60) as c:
        stored = c.request(wire.SessionRequest, session="ada").messages
        assert [m.role for m in stored] == ["user", "assistant", "user"]
        assert stored[2].content == "Write a long poem about the sea."
        alone = c.chat("What is my name?", max_tokens=8)
        continued = c.chat("What is my name?", max_tokens=8, session="ada")
        history_tokens = len(stored[0].content.split()) + len(stored[2].content.split())
        # The model got the stored conversation before the new question.
        assert continued.prompt_tokens > alone.prompt_tokens + history_tokens
        after = c.request(wire.SessionRequest, session="ada")
        assert after.session.messages == 5 and [m.role for m in after.messages][-2:] == ["user", "assistant"]
        assert after.messages[-1].content == continued.text and after.messages[-1].complete
    shown = _cli(env, "sessions", "show", "ada")
    assert shown.returncode == 0 and shown.stdout.count("--- user") == 3 and "What is my name?" in shown.stdout
    assert _cli(env, "sessions", "rm", "ada").returncode == 0
    gone = _cli(env, "sessions", "show", "ada")
    assert gone.returncode == 1 and "no chat session 'ada'" in gone.stderr
    assert (state_home / "exlsp" / "chat.sqlite3").stat().st_mode & 0o777 == 0o600


@pytest.mark.model
async def test_lsp_chat_with_session_id_and_chat_sessions(real_engine):
    manager = PluginManager(local_dirs=[], entry_points=True)
    manager.load()
    state = ServerState(plugins=manager, sessions=ChatSessions(ChatStore.default()))
    server = build_server(state)
    state.set_assistant(Assistant(real_engine, manager))
    async with lsp_connect(server) as client:
        await client.initialize_async(initialize_params())
        one = await client.request("exlsp/chat", {"messages": [{"role": "user", "content": "My favourite colour is teal."}],
                                                  "sessionId": "lsp-1", "maxTokens": 8})
        two = await client.request("exlsp/chat", {"messages": [{"role": "user", "content": "Which colour?"}],
                                                  "sessionId": "lsp-1", "maxTokens": 8})
        assert one["sessionId"] == "lsp-1" and two["promptTokens"] > one["promptTokens"] + 5
        listed = await client.request("exlsp/chatSessions", {})
        assert [(s["id"], s["messageCount"], s["title"]) for s in listed["sessions"]] == [
            ("lsp-1", 4, "My favourite colour is teal.")]
        got = await client.request("exlsp/chatSession", {"sessionId": "lsp-1"})
        assert [m["role"] for m in got["messages"]] == ["user", "assistant", "user", "assistant"]
        assert got["messages"][3]["content"] == two["text"] and got["messages"][3]["complete"] is True
        for method, params in [("exlsp/chat", {"messages": [{"role": "user", "content": "x"}], "sessionId": "a b"}),
                               ("exlsp/chat", {"messages": [{"role": "user", "content": "x"}], "sessionId": 7}),
                               ("exlsp/chatSessions", {"limit": 0}),
                               ("exlsp/chatSession", {}),
                               ("exlsp/chatSession", {"sessionId": "x" * 200}),
                               ("exlsp/chatSessionDelete", {"sessionId": ""})]:
            with pytest.raises(JsonRpcException) as bad:
                await client.request(method, params)
            assert bad.value.code == -32602, (method, params)
        # $/cancelRequest mid-answer: the answer so far is kept, marked incomplete.
        params = {"messages": [{"role": "user", "content": "Write a long story about a dog."}], "sessionId": "lsp-2",
                  "maxTokens": 300, "workDoneToken": "long"}
        task = asyncio.ensure_future(client.request("exlsp/chat", params, msg_id="chat-long"))
        for _ in range(500):
            if len(client.progress["long"]) > 4:
                break
            await asyncio.sleep(0.01)
        client.cancel("chat-long")
        with pytest.raises(JsonRpcException):
            await task
        streamed = "".join(v["message"] for v in client.progress["long"][1:] if v.get("kind") == "report")
        for _ in range(200):  # the shielded write finishes after the cancelled request has answered
            got = await client.request("exlsp/chatSession", {"sessionId": "lsp-2"})
            if got and len(got["messages"]) == 2:
                break
            await asyncio.sleep(0.01)
        partial = got["messages"][1]
        assert partial["role"] == "assistant" and partial["complete"] is False
        assert streamed and partial["content"].startswith(streamed)
        assert await client.request("exlsp/chatSessionDelete", {"sessionId": "lsp-2"}) == {"deleted": True}
        assert await client.request("exlsp/chatSessionDelete", {"sessionId": "lsp-1"}) == {"deleted": True}
        assert await client.request("exlsp/chatSession", {"sessionId": "lsp-1"}) is None
        assert (await client.request("exlsp/chatSessions", {}))["sessions"] == []
    state.sessions.store.close()
    # A server that keeps no sessions says so instead of silently forgetting.
    plain = ServerState(plugins=manager)
    plain_server = build_server(plain)
    plain.set_assistant(Assistant(real_engine, manager))
    async with lsp_connect(plain_server) as client:
        await client.initialize_async(initialize_params())
        with pytest.raises(JsonRpcException) as off:
            await client.request("exlsp/chat", {"messages": [{"role": "user", "content": "x"}], "sessionId": "s"})
        assert off.value.code == -32602 and "no chat sessions" in str(off.value)
    await asyncio.sleep(0)


def test_a_failed_commit_does_not_wedge_the_store(tmp_path):
    """A COMMIT that fails (here: another process still reading, on a file system without WAL) loses
    that write, never the next ones: the transaction is ended, the write lock released."""
    store = ChatStore(tmp_path / "chat.sqlite3")
    store.open()
    store._conn.execute("PRAGMA journal_mode = DELETE")
    store._conn.execute("PRAGMA busy_timeout = 200")
    store.append("a", [StoredMessage("user", "hi")])
    other = sqlite3.connect(tmp_path / "chat.sqlite3", isolation_level=None)
    other.execute("BEGIN")
    other.execute("SELECT * FROM messages").fetchall()  # holds a shared lock: COMMIT cannot finish
    with pytest.raises(sqlite3.OperationalError):
        store.append("a", [StoredMessage("assistant", "lost")])
    assert not store._conn.in_transaction
    other.execute("COMMIT")
    other.close()
    store.append("a", [StoredMessage("user", "again")])
    assert [m.content for m in store.messages("a")] == ["hi", "again"]
