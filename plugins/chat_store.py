"""Chat sessions on disk: one SQLite file per user, ``$XDG_STATE_HOME/exlsp/chat.sqlite3``.

Why SQLite (stdlib ``sqlite3``): every write is one transaction, so a process killed in the middle
of one (SIGKILL, OOM, power cut of the process) leaves the previous state, never half a turn; the
file is shared safely by every exlsp process of the user (the daemon, an ``exlsp serve`` for
another model) through SQLite's own locking.

- Journal: WAL with ``synchronous=FULL`` (a commit is on disk when it returns). The directory is
  0700 and the file 0600 (SQLite gives ``-wal``/``-shm`` the file's mode).
- Schema: ``sessions(id, title, created, updated)`` and ``messages(session_id, seq, role, content,
  created, complete)``; its version is ``PRAGMA user_version``.
- A file that cannot be used as ours (not a database, ``integrity_check`` fails, a schema from a
  newer exlsp, someone else's tables) is moved aside to ``chat.sqlite3.corrupt-<timestamp>`` (with
  its ``-wal``/``-shm``), a warning is logged and a fresh store is created: the data is kept for
  the user to inspect, and chat never fails over it.
- A state directory that cannot be written: one warning, and an in-memory store, so sessions
  still work for the life of the process, unpersisted.

The store opens lazily, at its first use, so processes that never use a session never touch the
disk. Every method is blocking and thread-safe (one connection behind a lock): the async
front doors call them through ``anyio.to_thread`` (see ``chat_sessions.py`` for why).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1
FILE_NAME = "chat.sqlite3"
# Client-chosen ids: bounded, printable, no whitespace (they end up on command lines and in UIs).
SESSION_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+/=-]{0,127}")
SESSION_ID_HELP = "1-128 characters: letters, digits and _ . : @ + / = - (not starting with punctuation other than _)"
ROLES = ("system", "user", "assistant")
MAX_CONTENT_CHARS = 1_000_000
MAX_LIST = 1000
TITLE_CHARS = 80

_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

SCHEMA = """
CREATE TABLE sessions (
    id      TEXT PRIMARY KEY,
    title   TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX sessions_by_updated ON sessions(updated);
CREATE TABLE messages (
    session_id TEXT    NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content    TEXT    NOT NULL,
    created    REAL    NOT NULL,
    complete   INTEGER NOT NULL DEFAULT 1 CHECK (complete IN (0, 1)),
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
"""


class SessionError(ValueError):
    """A session request that cannot be served as asked (bad id, bad message); the message says why."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: str
    content: str
    created: float = 0.0
    complete: bool = True  # False: an answer cut short (cancelled, failed); kept as far as it got


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    title: str
    created: float
    updated: float
    messages: int


class _Unusable(Exception):
    """The file exists but is not a store we can use: move it aside."""


def check_session_id(session_id: Any) -> str:
    if not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
        shown = repr(session_id)[:40] if isinstance(session_id, str) else type(session_id).__name__
        raise SessionError(f"invalid session id {shown}: {SESSION_ID_HELP}")
    return session_id


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/exlsp``, else ``~/.local/state/exlsp`` (a relative value is ignored, as
    the XDG spec says)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "exlsp"


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    return state_dir(environ) / FILE_NAME


def title_of(content: str) -> str:
    line = next((ln.strip() for ln in content.splitlines() if ln.strip()), "")
    line = "".join(ch if ch.isprintable() else " " for ch in line)
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class ChatStore:
    """The sessions of one user. ``path=None``: in memory only (tests, and the fallback)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.persisted = False  # known once opened
        self.warning: str | None = None  # why the store is not (or no longer) the file it was
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def default(cls) -> ChatStore:
        return cls(default_path())

    # ---- opening ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (idempotent). Never raises: the worst case is an in-memory store and a warning."""
        with self._lock:
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            return self._memory()
        try:
            self._prepare_directory(self.path.parent)
            try:
                conn = self._open_file(self.path)
            except _Unusable as why:
                moved = self._move_aside(self.path)
                self.warning = f"the previous store was unusable ({why}): moved aside to {moved}"
                log.warning("exlsp: the chat store %s was unusable (%s): moved aside to %s; starting a new one",
                            self.path, why, moved)
                conn = self._open_file(self.path)
        except (OSError, sqlite3.Error, _Unusable) as exc:
            return self._unpersisted(f"cannot use {self.path}: {_describe(exc)}")
        self.persisted = True
        return conn

    def _unpersisted(self, why: str) -> sqlite3.Connection:
        self.warning = why
        log.warning("exlsp: chat sessions are not saved (%s); they last until this process ends", why)
        return self._memory()

    def _memory(self) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return conn

    @staticmethod
    def _prepare_directory(directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_mode & 0o077 and directory.stat().st_uid == os.getuid():
            os.chmod(directory, 0o700)  # exlsp's own directory: chat history is private
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(13, "the directory is not writable", str(directory))

    @staticmethod
    def _open_file(path: Path) -> sqlite3.Connection:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # created 0600 before SQLite sees it
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        conn = sqlite3.connect(os.fspath(path), timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            _check_and_migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _error_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise _Unusable(str(exc)) from None
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _move_aside(path: Path) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.rename(path, target)
        for suffix in ("-wal", "-shm", "-journal"):  # a stale journal must not meet the new file
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                os.rename(extra, target.with_name(target.name + suffix))
        return target

    # ---- running statements -------------------------------------------------------------------

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return fn(self._connection())

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one transaction: all of it is committed, or none of it."""

        def txn(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (busy, disk full, I/O error) leaves the transaction open, holding
                # the write lock and refusing every later BEGIN: end it. After some errors SQLite
                # has rolled back already - then there is nothing to end.
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
            return result

        return self._run(txn)

    # ---- the API ------------------------------------------------------------------------------

    def sessions(self, limit: int = 50) -> list[SessionInfo]:
        """Newest first, at most ``limit`` (≤ 1000)."""
        limit = max(1, min(int(limit), MAX_LIST))
        rows = self._run(
            lambda c: c.execute(
                "SELECT s.id, s.title, s.created, s.updated,"
                " (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id)"
                " FROM sessions s ORDER BY s.updated DESC, s.id LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [SessionInfo(*row) for row in rows]

    def session(self, session_id: str) -> SessionInfo | None:
        check_session_id(session_id)
        return self._run(lambda c: _info(c, session_id))

    def messages(self, session_id: str, limit: int | None = None) -> list[StoredMessage]:
        """The session's messages in order; with ``limit``, the newest ``limit`` of them."""
        check_session_id(session_id)
        n = -1 if limit is None else max(0, int(limit))
        rows = self._run(
            lambda c: c.execute(
                "SELECT role, content, created, complete FROM"
                " (SELECT * FROM messages WHERE session_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (session_id, n),
            ).fetchall()
        )
        return [StoredMessage(role, content, created, bool(complete)) for role, content, created, complete in rows]

    def append(self, session_id: str, messages: Iterable[StoredMessage]) -> SessionInfo:
        """Add messages to a session (created if unknown) in one transaction; the session's title
        is its first user message."""
        check_session_id(session_id)
        now = time.time()

        def write(conn: sqlite3.Connection) -> SessionInfo:
            row = conn.execute("SELECT title FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO sessions (id, title, created, updated) VALUES (?, '', ?, ?)",
                             (session_id, now, now))
            title = row[0] if row else ""
            (seq,) = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM messages WHERE session_id = ?",
                                  (session_id,)).fetchone()
            for m in messages:
                _check_message(m)
                conn.execute(
                    "INSERT INTO messages (session_id, seq, role, content, created, complete) VALUES (?, ?, ?, ?, ?, ?)",
                    (session_id, seq, m.role, m.content, m.created or now, int(m.complete)),
                )
                seq += 1
                if not title and m.role == "user":
                    title = title_of(m.content)
            conn.execute("UPDATE sessions SET title = ?, updated = ? WHERE id = ?", (title, now, session_id))
            info = _info(conn, session_id)
            assert info is not None
            return info

        return self._write(write)

    def delete(self, session_id: str) -> bool:
        """Remove a session and its messages; False when there was none."""
        check_session_id(session_id)

        def write(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            return conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0

        return self._write(write)

    def describe(self) -> dict[str, Any]:
        """For ``status``: where sessions live and whether they survive a restart."""
        opened = self._conn is not None
        return {"path": str(self.path) if self.path else None, "opened": opened,
                "persisted": self.persisted if opened else None, "warning": self.warning}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# ---- helpers ---------------------------------------------------------------------------------------


def _check_and_migrate(conn: sqlite3.Connection) -> None:
    """Raise ``_Unusable`` for a file that is not our store; create the schema in a new one."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()  # "file is not a database" here
    if version > SCHEMA_VERSION:
        raise _Unusable(f"schema version {version} is newer than this exlsp's {SCHEMA_VERSION}")
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check(10)").fetchall()]
    if problems != ["ok"]:
        raise _Unusable("integrity check failed: " + "; ".join(problems)[:300])
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        log.info("exlsp: the chat store's file system has no WAL; using a rollback journal")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()  # another process may have won
        if version == 0:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            if tables:
                raise _Unusable(f"tables not made by exlsp: {', '.join(t[0] for t in tables)[:200]}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _info(conn: sqlite3.Connection, session_id: str) -> SessionInfo | None:
    row = conn.execute(
        "SELECT id, title, created, updated,"
        " (SELECT COUNT(*) FROM messages m WHERE m.session_id = sessions.id)"
        " FROM sessions WHERE id = ?",
        (session_id,),
    ).fetchone()
    return SessionInfo(*row) if row else None


def _check_message(m: StoredMessage) -> None:
    if m.role not in ROLES:
        raise SessionError(f"invalid role {m.role!r}: one of {', '.join(ROLES)}")
    if not isinstance(m.content, str):
        raise SessionError("a message's content must be a string")
    if len(m.content) > MAX_CONTENT_CHARS:
        raise SessionError(f"a message longer than {MAX_CONTENT_CHARS} characters is not kept in a session")


def _error_code(exc: sqlite3.Error) -> int:
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__
