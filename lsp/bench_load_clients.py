"""The simulated users of `exlsp bench load`: shell/CLI clients on the Unix socket and typists in
an editor over LSP. Each records one ``Sample`` per request; the report lives in bench_load.py.

A socket client is one connection in a loop (as the zsh widget keeps its ``zsocket``): pick a kind
from the mix, send it, read until its terminal reply, think a little, repeat. A typist opens a
source file with a block of lines removed and types the block back a key at a time; every key is a
``didChange`` and an automatic ``textDocument/inlineCompletion``, and a request still open when the
next key comes is cancelled with ``$/cancelRequest`` first, as editors do. Its transport is either an
``exlsp serve`` subprocess (what an editor launches: it attaches to the daemon's ``lsp.sock`` and
relays stdio) or ``lsp.sock`` itself (``--lsp-direct``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SOCKET_KINDS = ("suggest", "complete", "chat", "invalid")
# `invalid` is a request the server must refuse (no `buffer`): it proves the error accounting.

SUGGEST_BUFFERS = ["git ch", "docker ru", "ls -", "grep -r ", "cd ..", "python -m ", "tar -x", "find . -name ",
                   "git log --", "kubectl get ", "ssh ", "make "]
COMPLETE_PREFIXES = [
    ("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n", "\n"),
    ("import os\n\n\ndef list_python_files(root):\n    ", "\n"),
    ("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        ", "\n"),
    ("def read_lines(path):\n    with open(path) as f:\n        ", "\n"),
    ("function add(a, b) {\n  return", "\n}\n"),
]
CHAT_QUESTIONS = ["What does git rebase -i do?", "Explain Python list comprehensions.",
                  "How do I undo the last commit?", "What is a closure?", "Why is the sky blue?"]
CHAT_MAX_TOKENS = 128  # a short answer: chats still outlast many completions, runs stay bounded

RPC_REQUEST_CANCELLED = -32800


@dataclass
class Sample:
    """One request, seen from the client."""

    kind: str
    start: float  # seconds since the load began
    outcome: str = "done"  # done | cancelled | error
    code: str = ""  # error code (the server's, or the client's: timeout, connection)
    latency_ms: float | None = None  # to the terminal reply
    ttft_ms: float | None = None  # to the first delta (streaming kinds)
    engine_ttft_ms: float | None = None  # the server's own count, queue wait included
    empty: bool = False  # answered, but with nothing to show


def socket_request(kind: str, rid: int, rng: random.Random, cwd: str) -> dict[str, Any]:
    if kind == "suggest":
        buf = rng.choice(SUGGEST_BUFFERS)
        return {"type": "suggest", "id": rid, "buffer": buf, "cursor": len(buf), "shell": "zsh", "cwd": cwd,
                "history": [], "candidates": 1}
    if kind == "complete":
        prefix, suffix = rng.choice(COMPLETE_PREFIXES)
        return {"type": "complete", "id": rid, "prefix": prefix, "suffix": suffix, "language": "python",
                "path": f"bench{rid % 7}.py"}
    if kind == "chat":
        return {"type": "chat", "id": rid, "messages": [{"role": "user", "content": rng.choice(CHAT_QUESTIONS)}],
                "max_tokens": CHAT_MAX_TOKENS}
    if kind == "invalid":
        return {"type": "suggest", "id": rid}
    raise ValueError(f"unknown request kind {kind!r}")


def _elapsed_ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def _read_terminal(reader: asyncio.StreamReader, rid: int, sample: Sample, t0: float) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the daemon closed the connection")
        msg = json.loads(line)
        if msg.get("id") != rid:
            continue
        kind = msg.get("type")
        if kind == "delta":
            if sample.ttft_ms is None:
                sample.ttft_ms = _elapsed_ms(t0)
            continue
        sample.latency_ms = _elapsed_ms(t0)
        if kind == "done":
            sample.engine_ttft_ms = msg.get("ttft_ms")
            sample.empty = not (msg.get("suggestions") or msg.get("text"))
        elif kind == "cancelled":
            sample.outcome = "cancelled"
        else:
            sample.outcome, sample.code = "error", str(msg.get("code") or kind)
        return


async def socket_client(sock: Path, mix: dict[str, float], *, seed: int, t_zero: float, stop_at: float,
                        think_s: tuple[float, float], timeout_s: float, cwd: str, out: list[Sample]) -> None:
    """One shell-like client until ``stop_at`` (monotonic); its last request is allowed to finish."""
    rng = random.Random(seed)
    kinds, weights = list(mix), list(mix.values())
    rids = itertools.count(1)
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    await asyncio.sleep(rng.uniform(*think_s))  # stagger the start
    try:
        while time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            rid = next(rids)
            sample = Sample(kind, time.monotonic() - t_zero)
            out.append(sample)
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_unix_connection(str(sock), limit=2**22)
                reader, writer = conn
                writer.write(json.dumps(socket_request(kind, rid, rng, cwd)).encode() + b"\n")
                await writer.drain()
                async with asyncio.timeout(timeout_s):
                    await _read_terminal(reader, rid, sample, t0)
            except TimeoutError:
                sample.outcome, sample.code = "error", "timeout"
                conn = _close(conn)  # closing cancels it on the server
            except (OSError, ConnectionError, ValueError) as exc:
                sample.outcome, sample.code = "error", f"connection: {type(exc).__name__}"
                conn = _close(conn)
                await asyncio.sleep(0.2)
            await asyncio.sleep(rng.uniform(*think_s))
    finally:
        _close(conn)


def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if conn is not None:
        conn[1].close()
    return None


# ---- LSP ---------------------------------------------------------------------------------------


class LspPeer:
    """A minimal JSON-RPC client over LSP framing: requests get futures; requests from the server
    are answered with null (nothing in a typist's session needs more)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._task = asyncio.ensure_future(self._read_loop())

    def _send(self, msg: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **msg}).encode()
        self._writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def request(self, method: str, params: Any) -> tuple[int, asyncio.Future[dict[str, Any]]]:
        """Send; the future gets the whole response (``result`` or ``error``)."""
        rid = next(self._ids)
        fut = self._pending[rid] = asyncio.get_running_loop().create_future()
        self._send({"id": rid, "method": method, "params": params})
        return rid, fut

    async def call(self, method: str, params: Any, timeout_s: float = 30) -> Any:
        _, fut = self.request(method, params)
        async with asyncio.timeout(timeout_s):
            msg = await fut
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error'].get('message')}")
        return msg.get("result")

    async def _read_loop(self) -> None:
        try:
            while True:
                length = None
                while (line := await self._reader.readline()) not in (b"\r\n", b"\n"):
                    if not line:
                        raise ConnectionError("the language server closed the connection")
                    name, _, value = line.decode("ascii").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if length is None:
                    raise ConnectionError("a message without Content-Length")
                msg = json.loads(await self._reader.readexactly(length))
                if "method" in msg:
                    if "id" in msg:
                        self._send({"id": msg["id"], "result": None})
                    continue
                fut = self._pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError) as exc:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(str(exc) or type(exc).__name__))
            self._pending.clear()

    async def close(self) -> None:
        self._task.cancel()
        self._writer.close()


def utf16_position(text: str, offset: int) -> dict[str, int]:
    line = text.count("\n", 0, offset)
    col_start = text.rfind("\n", 0, offset) + 1
    return {"line": line, "character": len(text[col_start:offset].encode("utf-16-le")) // 2}


@dataclass
class TypingPlan:
    """Where a typist types: the file with ``block`` removed (its last newline kept, so nothing is
    right of the cursor and automatic requests are never skipped as 'inside a word')."""

    before: str
    block: str
    after: str

    @classmethod
    def at(cls, source: str, fraction: float, chars: int) -> TypingPlan:
        lines = source.splitlines(keepends=True)
        first = min(len(lines) - 1, int(len(lines) * fraction))
        start = sum(len(x) for x in lines[:first])
        while start < len(source) and source[start] in " \t":  # auto-indent typed it
            start += 1
        end = start
        while end < len(source) and end - start < chars:
            nl = source.find("\n", end)
            end = len(source) if nl < 0 else nl + 1
        block = source[start:end]
        if block.endswith("\n"):
            block, end = block[:-1], end - 1
        return cls(source[:start], block, source[end:])


@dataclass
class Typist:
    """One editor: types, asks, cancels what the next key makes stale, records every request."""

    peer: LspPeer
    uri_base: str
    source: str
    rng: random.Random
    t_zero: float
    keystroke_s: tuple[float, float]
    line_pause_s: float
    out: list[Sample]
    position: float = 0.0
    open_wait: bool = True  # after opening a file, wait for its first suggestion before typing
    documents: int = 0
    waiting: list[asyncio.Future[Any]] = field(default_factory=list)

    async def run(self, stop_at: float, timeout_s: float) -> None:
        while time.monotonic() < stop_at:
            await self._type_block(stop_at)
        if self.waiting:
            await asyncio.wait(self.waiting, timeout=timeout_s)
        for fut in self.waiting:
            if not fut.done():
                fut.cancel()

    async def _type_block(self, stop_at: float) -> None:
        plan = TypingPlan.at(self.source, self.position, 240)
        self.position = (self.position + 0.37) % 0.9
        self.documents += 1
        uri = f"{self.uri_base}/{self.documents}.py"
        text = plan.before + plan.after
        self.peer.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": text}})
        cursor, version = len(plan.before), 1
        open_request: tuple[int, asyncio.Future[Any]] | None = None
        if self.open_wait:
            # A user opens the file, puts the cursor down and reads: the first (cold) prompt gets
            # its prefill done before the keys start superseding it.
            _, first = self._ask(uri, utf16_position(text, cursor), invoked=True)
            await asyncio.wait([first], timeout=max(0.0, stop_at - time.monotonic()))
        for ch in plan.block:
            if time.monotonic() >= stop_at:
                break
            if open_request is not None and not open_request[1].done():
                self.peer.notify("$/cancelRequest", {"id": open_request[0]})
            at = utf16_position(text, cursor)
            text, cursor, version = text[:cursor] + ch + text[cursor:], cursor + 1, version + 1
            self.peer.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": at, "end": at}, "text": ch}]})
            open_request = self._ask(uri, utf16_position(text, cursor))
            pause = self.rng.uniform(*self.keystroke_s) + (self.line_pause_s if ch == "\n" else 0.0)
            await asyncio.sleep(pause)
        if open_request is not None and not open_request[1].done():
            await asyncio.wait([open_request[1]], timeout=max(0.0, stop_at - time.monotonic()))
        self.peer.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    def _ask(self, uri: str, position: dict[str, int], invoked: bool = False) -> tuple[int, asyncio.Future[Any]]:
        sample = Sample("inline", time.monotonic() - self.t_zero)
        self.out.append(sample)
        t0 = time.perf_counter()
        rid, fut = self.peer.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 1 if invoked else 2}})
        fut.add_done_callback(_record_inline(sample, t0))
        self.waiting = [f for f in self.waiting if not f.done()] + [fut]
        return rid, fut


def _record_inline(sample: Sample, t0: float) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        sample.latency_ms = _elapsed_ms(t0)
        if fut.cancelled():  # never answered before the end: the typist stopped waiting
            sample.outcome, sample.code, sample.latency_ms = "error", "timeout", None
            return
        if fut.exception() is not None:
            sample.outcome, sample.code, sample.latency_ms = "error", "connection", None
            return
        msg = fut.result()
        error = msg.get("error")
        if error is None:
            items = (msg.get("result") or {}).get("items") or []
            sample.empty = not any(i.get("insertText") for i in items)
        elif error.get("code") == RPC_REQUEST_CANCELLED:
            sample.outcome = "cancelled"
        else:
            sample.outcome, sample.code = "error", f"lsp {error.get('code')}"

    return done


def initialize_params() -> dict[str, Any]:
    return {"processId": None, "rootUri": None, "capabilities": {
        "textDocument": {"inlineCompletion": {}}, "general": {"positionEncodings": ["utf-16"]}}}
