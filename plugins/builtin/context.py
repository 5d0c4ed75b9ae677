"""Extra completion context: a ring of chunks from recently opened, edited or viewed buffers.

The current file is not here: ``layout.py`` windows it. The ring is fed by the editor side
(``RING.add(path, text, cursor_line)`` on didOpen/didChange) and by the query's open documents;
its chunks come out oldest first, so that the prompt's context only grows at its end (the prompt
layout keeps them in that order and evicts in batches).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlparse

from exlsp.plugins import hookimpl
from exlsp.plugins.api import CompletionQuery, ContextChunk, ModelInfo, Query

DEFAULTS: dict[str, Any] = {
    "ring_size": 16,  # chunks kept (llama.vim: 16)
    "chunk_lines": 32,  # lines per chunk (llama.vim: 64, with a far larger context)
    "similarity": 0.9,  # a new chunk whose line set overlaps an old one this much replaces it
    "max_chunk_chars": 8000,  # minified files: a line count alone does not bound a chunk
    "timeout_s": 0.05,
}


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str  # the path or URI as the caller gave it
    path: str  # what the prompt shows
    text: str
    lines: frozenset[str]


def display_path(path: str) -> str:
    if path.startswith("file://"):
        return unquote(urlparse(path).path)
    return path


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class ContextRing:
    """Chunks of other buffers, oldest first; thread-safe (fed from the event loop, read by
    providers that may run in worker threads)."""

    def __init__(self, capacity: int = 16, chunk_lines: int = 32, similarity: float = 0.9) -> None:
        self.capacity = capacity
        self.chunk_lines = chunk_lines
        self.similarity = similarity
        self.max_chunk_chars = DEFAULTS["max_chunk_chars"]
        self._entries: deque[_Entry] = deque()
        self._lock = threading.Lock()

    def configure(self, settings: Mapping[str, Any]) -> None:
        def pick(name: str, lo: float, hi: float) -> Any:
            value = settings.get(name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi
            return type(DEFAULTS[name])(value) if ok else None

        with self._lock:
            for name, attr, lo, hi in (
                ("ring_size", "capacity", 0, 1024),
                ("chunk_lines", "chunk_lines", 4, 4096),
                ("similarity", "similarity", 0.0, 1.0),
                ("max_chunk_chars", "max_chunk_chars", 256, 1_000_000),
            ):
                value = pick(name, lo, hi)
                if value is not None:
                    setattr(self, attr, value)
            while len(self._entries) > self.capacity:
                self._entries.popleft()

    def pick_chunk(self, text: str, cursor_line: int | None) -> str:
        """``chunk_lines`` lines around the cursor, or from the top. The start is snapped to a
        quarter of a chunk, so that typing inside a chunk edits it instead of sliding it."""
        lines = text.split("\n")
        n = self.chunk_lines
        if cursor_line is None:
            start = 0
        else:
            step = max(1, n // 4)
            start = max(0, min(cursor_line - n // 2, len(lines) - n))
            start -= start % step
        return "\n".join(lines[start : start + n])[: self.max_chunk_chars]

    def add(self, path: str, text: str, cursor_line: int | None = None) -> bool:
        """Add the chunk of ``text`` around ``cursor_line``; True when the ring changed. A chunk
        very like an older one replaces it (the newer text wins), an identical one is a no-op."""
        chunk = self.pick_chunk(text, cursor_line)
        lines = frozenset(line.strip() for line in chunk.split("\n") if line.strip())
        if not lines:
            return False
        entry = _Entry(path, display_path(path), chunk, lines)
        with self._lock:
            if any(e.key == path and e.text == chunk for e in self._entries):
                return False
            self._entries = deque(e for e in self._entries if jaccard(e.lines, lines) <= self.similarity)
            self._entries.append(entry)
            while len(self._entries) > self.capacity:
                self._entries.popleft()
            return True

    def remove(self, path: str) -> None:
        with self._lock:
            self._entries = deque(e for e in self._entries if e.key != path)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def knows(self, path: str) -> bool:
        with self._lock:
            return any(e.key == path for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def chunks(self, exclude: str | None = None, source: str = "recent_buffers") -> list[ContextChunk]:
        """The chunks, oldest first, leaving out ``exclude`` (the file being completed)."""
        with self._lock:
            entries = list(self._entries)
        skip = {exclude, display_path(exclude)} if exclude else set()
        return [
            ContextChunk(source=source, text=e.text, path=e.path)
            for e in entries
            if e.key not in skip and e.path not in skip
        ]


class RecentBuffersProvider:
    """Chunks of other buffers for completion prompts. Open documents the ring has not seen yet
    join it (their top), so a client that sends only ``open_documents`` still gets context."""

    name = "recent_buffers"
    kinds = frozenset({"completion"})

    def __init__(self, ring: ContextRing) -> None:
        self.ring = ring
        self.timeout_s = DEFAULTS["timeout_s"]
        self.max_new_documents = 4  # per query: opening a big workspace must not stall a keystroke

    def configure(self, settings: Mapping[str, Any]) -> None:
        self.ring.configure(settings)
        timeout = settings.get("timeout_s")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout <= 10:
            self.timeout_s = float(timeout)

    def provide(self, query: Query, model: ModelInfo) -> Sequence[ContextChunk]:
        if not isinstance(query, CompletionQuery):
            return []
        added = 0
        for path, text in query.open_documents.items():
            if added >= self.max_new_documents:
                break
            if path != query.path and not self.ring.knows(path):
                added += self.ring.add(path, text)
        return self.ring.chunks(exclude=query.path)


RING = ContextRing(DEFAULTS["ring_size"], DEFAULTS["chunk_lines"], DEFAULTS["similarity"])
PROVIDER = RecentBuffersProvider(RING)


@hookimpl
def exlsp_register_context_providers(register: Any) -> None:
    register(PROVIDER)


@hookimpl
def exlsp_default_settings() -> dict[str, Any]:
    return dict(DEFAULTS)
