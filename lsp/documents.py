"""Reading a cursor's surroundings from a synced document, within budgets.

A 10 MB file or a binary one must not stall the server: only a bounded window of characters
around the cursor is ever sliced out (the exact token budget is applied later, by the prompt
layout), and documents that look binary get no completion.

Positions are converted here, not by pygls' ``TextDocument``: LSP lines end only at ``\\n``,
``\\r\\n`` and ``\\r`` (``str.splitlines``, which pygls uses, also breaks at form feeds, U+2028
and six more, so every position after a ``^L`` page break pointed one line too far); a
``character`` past the end of its line means the end of the line (pygls took one character
less on the last line, and the ``\\r`` of a CRLF); a line past the end means the end of the
document. ``LspTextDocument`` applies incremental edits with the same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.workspace import TextDocument

# Characters around the cursor handed to the prompt builder; at ~3-4 characters a token this is
# far more than any prompt budget, and cheap to slice.
PREFIX_CHARS = 48_000
SUFFIX_CHARS = 16_000


@dataclass(frozen=True, slots=True)
class CursorContext:
    prefix: str
    suffix: str
    line_prefix: str  # the current line up to the cursor
    line_suffix: str  # the current line after the cursor
    offset: int  # cursor offset in the document (characters)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """Lone surrogates (JSON's ``"\\ud800"``, which pygls passes on) become U+FFFD: the tokenizer
    cannot encode them, and every completion in such a document failed (found by fuzzing). The
    length stays the same in every position encoding, so offsets and ranges still hold."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def looks_binary(text: str) -> bool:
    """NUL bytes, or more than 10% control characters in the first 8 KB (runs per keystroke:
    a regex, not a Python loop)."""
    sample = text[:8192]
    return "\x00" in sample or len(_CONTROL.findall(sample)) > len(sample) // 10


@dataclass(frozen=True, slots=True)
class Location:
    """Where an LSP position lands in a document's text (offsets in code points)."""

    offset: int
    line_start: int  # where its line starts
    line_end: int  # where its line ends, before the line break
    position: types.Position  # the same place as a valid position: clamped, on a character boundary


def _encoding(codec: Any) -> str:
    enc = getattr(codec, "encoding", None)
    enc = str(getattr(enc, "value", enc) or "utf-16")
    return enc if enc in ("utf-8", "utf-32") else "utf-16"  # pygls' default for anything else


def num_units(text: str, encoding: str) -> int:
    """Length of ``text`` in the negotiated position encoding's code units."""
    if encoding == "utf-32" or text.isascii():
        return len(text)
    if encoding == "utf-16":
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    return len(text.encode("utf-8", "surrogatepass"))


def _char_units(ch: str, encoding: str) -> int:
    cp = ord(ch)
    if encoding == "utf-16":
        return 2 if cp > 0xFFFF else 1
    return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4


def _index_in_line(text: str, units: int, encoding: str) -> int:
    """The code point index of ``units`` code units into ``text``; past its end, its end; inside
    a character (half a surrogate pair), after it."""
    if units <= 0:
        return 0
    if encoding == "utf-32" or text.isascii():
        return min(units, len(text))
    count = 0
    for i, ch in enumerate(text[:units]):  # every character is at least one unit
        if count >= units:
            return i
        count += _char_units(ch, encoding)
    return min(units, len(text)) if count >= units else len(text)


def _break_view(source: str) -> str:
    """``source`` with a ``\\n`` exactly where each LSP line break ends, and nowhere else (same
    length, so offsets carry over)."""
    if "\r" not in source:
        return source
    return source.replace("\r\n", "\x00\n").replace("\r", "\n")


def locate(source: str, position: types.Position, codec: Any) -> Location:
    """Resolve a client position in ``source`` (``codec``: the document's pygls PositionCodec)."""
    encoding = _encoding(codec)
    view = _break_view(source)
    line = max(0, position.line)
    if line == 0:
        start = 0
    else:
        parts = view.split("\n", line)
        if len(parts) <= line:  # past the last line: the end of the document
            line = len(parts) - 1
            start = len(view) - len(parts[-1])
            character = num_units(source[start:], encoding)
            return Location(len(source), start, len(source), types.Position(line=line, character=character))
        start = len(view) - len(parts[-1])
    end = view.find("\n", start)
    if end < 0:
        end = len(source)
    elif end > 0 and source[end - 1] == "\r" and source[end] == "\n":
        end -= 1  # a CRLF line ends before its \r
    index = _index_in_line(source[start:end], position.character, encoding)
    character = num_units(source[start : start + index], encoding)
    return Location(start + index, start, end, types.Position(line=line, character=character))


def offset_at(doc: Any, position: types.Position) -> int:
    """The offset of a client position in a pygls TextDocument's source."""
    return locate(doc.source, position, doc.position_codec).offset


def clamp_position(doc: Any, position: types.Position) -> types.Position:
    """Positions past the end clamp to the end (clients do send them after fast edits), counted
    in the negotiated encoding; a character past its line's end clamps to the line's end."""
    return locate(doc.source, position, doc.position_codec).position


def cursor_context(doc: Any, position: types.Position) -> CursorContext:
    """``doc`` is a pygls TextDocument (positions in the negotiated encoding)."""
    source: str = doc.source
    where = locate(source, position, doc.position_codec)
    offset = where.offset
    return CursorContext(
        prefix=scrub(source[max(0, offset - PREFIX_CHARS) : offset]),
        suffix=scrub(source[offset : offset + SUFFIX_CHARS]),
        line_prefix=scrub(source[where.line_start : offset]),
        line_suffix=scrub(source[offset : where.line_end]),
        offset=offset,
    )


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


class LspTextDocument(TextDocument):
    """pygls' TextDocument with LSP's line breaks and exact incremental edits (see the module
    docstring); ``use_lsp_documents`` makes a workspace create these."""

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(_LINE.findall(self.source))

    def offset_at_position(self, client_position: types.Position) -> int:
        return offset_at(self, client_position)

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        source = self.source
        start = locate(source, change.range.start, self.position_codec).offset
        end = locate(source, change.range.end, self.position_codec).offset
        start, end = min(start, end), max(start, end)
        self._source = source[:start] + change.text + source[end:]


def use_lsp_documents(workspace: Any) -> None:
    """Make a pygls Workspace create ``LspTextDocument``s (call before any document opens)."""

    def create(doc_uri: str, source: str | None = None, version: int | None = None,
               language_id: str | None = None) -> LspTextDocument:
        return LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                               sync_kind=workspace._sync_kind, position_codec=workspace._position_codec)

    workspace._create_text_document = create
