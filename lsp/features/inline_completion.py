"""``textDocument/inlineCompletion``: ghost-text completions.

- A newer request for the same document supersedes the older one; its generation stops at the
  next token. ``$/cancelRequest`` does the same — unless a newer request has attached to it, or
  attaches within ``CANCEL_GRACE_S``: editors cancel the open request *before* sending the next
  keystroke's, and cancelling at once would restart the generation on every key.
- A request whose prefix extends an in-flight request's prefix by what the user just typed
  attaches to it instead of asking the model again — when what was typed agrees with what the
  generation has produced so far; once done, the typed part is cut off.
- Typing through a shown suggestion is answered from the per-document cache without the model;
  an exact repeat from an LRU cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from exlsp.plugins.api import Answer, CompletionQuery

from ..documents import CursorContext, clamp_position, cursor_context, looks_binary

if TYPE_CHECKING:
    from ..server import ExlspServer

log = logging.getLogger(__name__)

LOOKBACK_CHARS = 128  # how far a user may type through a suggestion (llama.vim: 128)
ATTACH_CHARS = 64
CANCEL_GRACE_S = 0.1  # a cancelled generation waits this long for the next keystroke's request


def _suffix_key(suffix: str) -> str:
    return suffix[:256]


@dataclass
class _Shown:
    prefix: str
    suffix_key: str
    text: str


class CompletionCache:
    def __init__(self, size: int = 256, per_document: int = 8) -> None:
        self._lru: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._size = size
        self._shown: dict[str, deque[_Shown]] = {}
        self._per_document = per_document
        self.hits = 0

    def lookup(self, uri: str, prefix: str, suffix: str) -> str | None:
        key = (prefix[-2048:], _suffix_key(suffix))
        if key in self._lru:
            self._lru.move_to_end(key)
            self.hits += 1
            return self._lru[key]
        for shown in reversed(self._shown.get(uri, ())):
            if shown.suffix_key != key[1] or not prefix.startswith(shown.prefix):
                continue
            typed = prefix[len(shown.prefix) :]
            if len(typed) <= LOOKBACK_CHARS and shown.text.startswith(typed) and len(shown.text) > len(typed):
                self.hits += 1
                return shown.text[len(typed) :]
        return None

    def store(self, uri: str, prefix: str, suffix: str, text: str) -> None:
        if not text:
            return
        self._lru[(prefix[-2048:], _suffix_key(suffix))] = text
        while len(self._lru) > self._size:
            self._lru.popitem(last=False)
        self._shown.setdefault(uri, deque(maxlen=self._per_document)).append(
            _Shown(prefix, _suffix_key(suffix), text)
        )

    def forget(self, uri: str) -> None:
        self._shown.pop(uri, None)

    def clear(self) -> None:
        self._lru.clear()
        self._shown.clear()


@dataclass
class _Inflight:
    prefix: str
    suffix_key: str
    task: asyncio.Task[Answer] | None = None
    waiters: int = 0
    superseded: bool = field(default=False)
    partial: str = ""  # what the generation has streamed so far
    pending_cancel: asyncio.TimerHandle | None = None

    def agrees_with(self, typed: str) -> bool:
        """Could the answer still start with ``typed``? (What streamed so far does not refute it.)"""
        return self.partial.startswith(typed) or typed.startswith(self.partial)

    def on_delta(self, text: str) -> None:
        self.partial += text

    def cancel_unless_adopted(self) -> None:
        self.pending_cancel = None
        if self.waiters <= 0 and self.task is not None and not self.task.done():
            self.task.cancel()


class InflightTable:
    def __init__(self) -> None:
        self._by_uri: dict[str, _Inflight] = {}
        self.attached = 0
        self.superseded = 0

    def get_or_start(self, uri: str, ctx: CursorContext, start) -> tuple[_Inflight, str]:
        """The in-flight generation to wait on, and what was typed since it started. ``start``
        gets the callback that receives the generation's deltas."""
        current = self._by_uri.get(uri)
        if current is not None and current.task is not None and not current.task.done():
            typed = ctx.prefix[len(current.prefix) :] if ctx.prefix.startswith(current.prefix) else None
            if (
                typed is not None
                and len(typed) <= ATTACH_CHARS
                and current.suffix_key == _suffix_key(ctx.suffix)
                and current.agrees_with(typed)
            ):
                self.attached += bool(typed)
                current.waiters += 1
                if current.pending_cancel is not None:
                    current.pending_cancel.cancel()
                    current.pending_cancel = None
                return current, typed
            current.superseded = True
            current.task.cancel()
            self.superseded += 1
        entry = _Inflight(ctx.prefix, _suffix_key(ctx.suffix), waiters=1)
        entry.task = asyncio.ensure_future(start(entry.on_delta))
        self._by_uri[uri] = entry
        return entry, ""

    def release(self, uri: str, entry: _Inflight) -> None:
        entry.waiters -= 1
        if entry.waiters <= 0 and entry.task is not None and not entry.task.done() and entry.pending_cancel is None:
            # Nobody wants it any more ($/cancelRequest): stop the model - unless the next
            # keystroke's request adopts it first.
            entry.pending_cancel = asyncio.get_running_loop().call_later(CANCEL_GRACE_S, entry.cancel_unless_adopted)
        if self._by_uri.get(uri) is entry and entry.task is not None and entry.task.done():
            del self._by_uri[uri]


def note_skipped_document(ls: ExlspServer, uri: str, text: str) -> None:
    """Tell the user once per document why it gets no completions (not on every keystroke)."""
    state = ls.exlsp
    if uri in state.noted_documents:
        return
    state.noted_documents.add(uri)
    state.counters["skipped_documents"] += 1
    limit = state.settings.completion.max_document_bytes
    why = "it looks binary" if looks_binary(text) else f"it is larger than {limit // 1_000_000} MB"
    ls.window_show_message(
        types.ShowMessageParams(
            type=types.MessageType.Info,
            message=f"exlsp: no completions for {uri.rsplit('/', 1)[-1]}: {why} (completion.maxDocumentBytes)",
        )
    )


def _should_skip(ls: ExlspServer, params: types.InlineCompletionParams, ctx: CursorContext) -> str | None:
    cfg = ls.exlsp.settings.completion
    if not cfg.enabled:
        return "completion disabled"
    automatic = params.context.trigger_kind == types.InlineCompletionTriggerKind.Automatic
    if automatic:
        if not cfg.auto_trigger:
            return "automatic trigger disabled"
        right = ctx.line_suffix.strip()
        if len(right) > cfg.max_chars_right:
            return "too much text right of the cursor"
        if ctx.line_suffix[:1].isalnum() or ctx.line_suffix[:1] == "_":
            return "cursor inside a word"
    return None


def _items(ls: ExlspServer, uri: str, position: types.Position, text: str, ctx: CursorContext, codec: Any):
    if not text.strip():
        return []
    end = position
    first_line = text.split("\n", 1)[0]
    right = ctx.line_suffix
    if right.strip() and "\n" not in text and first_line.endswith(right.strip()):
        # The completion already contains what is right of the cursor: replace it, don't duplicate.
        # In the negotiated encoding: Neovim counts UTF-8 bytes, VS Code UTF-16 units.
        end = types.Position(line=position.line, character=position.character + codec.client_num_units(right))
    rng = types.Range(start=position, end=end)

    def item(insert: str) -> types.InlineCompletionItem:
        return types.InlineCompletionItem(
            insert_text=insert,
            range=rng,
            command=types.Command(
                title="exlsp: accepted",
                command="exlsp.accept",
                arguments=[{"uri": uri, "kind": "completion", "chars": len(insert)}],
            ),
        )

    items = [item(text)]
    if "\n" in text.strip("\n") and first_line.strip():
        items.append(item(first_line))  # cycling offers the one-line variant too
    return items


async def handle(ls: ExlspServer, params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
    state = ls.exlsp
    uri = params.text_document.uri
    if uri not in ls.workspace.text_documents:
        log.warning("inline completion for a document that is not open: %s", uri)
        return types.InlineCompletionList(items=[])
    doc = ls.workspace.get_text_document(uri)
    if len(doc.source) > state.settings.completion.max_document_bytes or looks_binary(doc.source):
        note_skipped_document(ls, uri, doc.source)
        return types.InlineCompletionList(items=[])
    ctx = cursor_context(doc, params.position)
    position = clamp_position(doc, params.position)
    reason = _should_skip(ls, params, ctx)
    if reason is not None:
        state.counters["skipped"] += 1
        return types.InlineCompletionList(items=[])
    cached = state.cache.lookup(uri, ctx.prefix, ctx.suffix)
    if cached is not None:
        state.counters["cache_hits"] += 1
        return types.InlineCompletionList(items=_items(ls, uri, position, cached, ctx, doc.position_codec))
    assistant = await state.wait_ready(timeout=5.0)
    if assistant is None:
        return types.InlineCompletionList(items=[])

    query = CompletionQuery(
        prefix=ctx.prefix,
        suffix=ctx.suffix,
        language=doc.language_id or "",
        path=doc.path or uri,
        trigger="invoked" if params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked else "automatic",
        max_tokens=state.settings.completion.max_tokens,
        budget_tokens=state.settings.completion.budget_tokens,
        time_budget_ms=state.settings.completion.time_budget_ms,
        open_documents={},
    )
    entry, typed = state.inflight.get_or_start(uri, ctx, lambda on_delta: assistant.complete(query, on_delta, supersede_key=uri))
    try:
        answer = await asyncio.shield(entry.task)
    except asyncio.CancelledError:
        state.inflight.release(uri, entry)
        raise
    state.inflight.release(uri, entry)
    text = answer.text
    state.cache.store(uri, entry.prefix, ctx.suffix, text)
    if typed:
        if not text.startswith(typed):
            return types.InlineCompletionList(items=[])
        text = text[len(typed) :]
    return types.InlineCompletionList(items=_items(ls, uri, position, text, ctx, doc.position_codec))
