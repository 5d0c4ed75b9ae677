"""``textDocument/completion``: the fallback for clients without inline completion. With the
default setting ``completion.fallback = "auto"`` it answers only clients that do not advertise
``textDocument.inlineCompletion``, so editors with both never get the same text twice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from exlsp.plugins.api import CompletionQuery

from ..documents import clamp_position, cursor_context, looks_binary
from .inline_completion import note_skipped_document

if TYPE_CHECKING:
    from ..server import ExlspServer


def _word_before(line_prefix: str) -> str:
    i = len(line_prefix)
    while i > 0 and (line_prefix[i - 1].isalnum() or line_prefix[i - 1] == "_"):
        i -= 1
    return line_prefix[i:]


def enabled(ls: ExlspServer) -> bool:
    mode = ls.exlsp.settings.completion.fallback
    if mode == "off" or not ls.exlsp.settings.completion.enabled:
        return False
    if mode == "on":
        return True
    caps = ls.client_capabilities.text_document
    return caps is None or caps.inline_completion is None


async def handle(ls: ExlspServer, params: types.CompletionParams) -> types.CompletionList:
    empty = types.CompletionList(is_incomplete=False, items=[])
    uri = params.text_document.uri
    if not enabled(ls) or uri not in ls.workspace.text_documents:
        return empty
    doc = ls.workspace.get_text_document(uri)
    if len(doc.source) > ls.exlsp.settings.completion.max_document_bytes or looks_binary(doc.source):
        note_skipped_document(ls, uri, doc.source)
        return empty
    assistant = await ls.exlsp.wait_ready(timeout=5.0)
    if assistant is None:
        return empty
    ctx = cursor_context(doc, params.position)
    query = CompletionQuery(prefix=ctx.prefix, suffix=ctx.suffix, language=doc.language_id or "",
                            path=doc.path or uri, trigger="invoked",
                            max_tokens=ls.exlsp.settings.completion.max_tokens,
                            budget_tokens=ls.exlsp.settings.completion.budget_tokens,
                            time_budget_ms=ls.exlsp.settings.completion.time_budget_ms)
    answer = await assistant.complete(query, supersede_key=uri)
    if not answer.text.strip():
        return empty
    label = answer.text.split("\n", 1)[0].strip() or answer.text.strip()
    # Clients filter items by the word before the cursor: the edit replaces that word with
    # word + completion, so the item survives the filter mid-word.
    word = _word_before(ctx.line_prefix)
    # The clamped position: past the end of a line or of the document, the edit still names
    # text that exists (as inline completion's items do).
    end = clamp_position(doc, params.position)
    start = types.Position(line=end.line, character=end.character - doc.position_codec.client_num_units(word))
    item = types.CompletionItem(
        label=(word + label)[:80],
        kind=types.CompletionItemKind.Text,
        detail="exlsp",
        filter_text=word + answer.text,
        insert_text=word + answer.text,
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=types.Range(start=start, end=end), new_text=word + answer.text),
        command=types.Command(title="exlsp: accepted", command="exlsp.accept",
                              arguments=[{"uri": uri, "kind": "completion-fallback"}]),
        sort_text="0",
    )
    return types.CompletionList(is_incomplete=True, items=[item])
