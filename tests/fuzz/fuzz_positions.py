"""Fuzz LSP position conversion (``exlsp.lsp.documents``) against a small independent model.

The model reads the LSP specification literally: lines end at ``\\n``, ``\\r\\n`` or ``\\r`` and
nowhere else; ``character`` counts code units of the negotiated encoding (UTF-16 by default);
past its line's end it means the line's end; a line past the last means the document's end;
inside a character (half a surrogate pair) it means after that character (exlsp's choice). The
text handed on has every lone surrogate (which JSON can carry) replaced by U+FFFD.

Checked for one document, one position and optionally one incremental edit: ``cursor_context``
(prefix, suffix, the cursor line's two halves), ``clamp_position`` (a valid position for the
same place), the text edit range of ``textDocument/completion`` and the replace range of an
inline completion item, ``LspTextDocument.lines`` and its incremental edits — and that the
client's Position object is left as it came.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzzlib import Bytes, fuzz, instrumented, text  # noqa: E402

with instrumented(__name__):
    from lsprotocol import types
    from pygls.workspace import TextDocument
    from pygls.workspace.position_codec import PositionCodec

    from exlsp.lsp.documents import LspTextDocument, clamp_position, cursor_context
    from exlsp.lsp.features import completion, inline_completion

ENCODINGS = ("utf-16", "utf-8", "utf-32")
BIG = (2**31 - 1, 1000, 65536)


# ---- the model -----------------------------------------------------------------------------------


def model_lines(source: str) -> list[tuple[int, int]]:
    """(start, end before the line break) of every LSP line; always at least one."""
    lines = []
    start = i = 0
    while i < len(source):
        ch = source[i]
        if ch == "\r" and source[i + 1 : i + 2] == "\n":
            lines.append((start, i))
            i += 2
            start = i
        elif ch in "\r\n":
            lines.append((start, i))
            i += 1
            start = i
        else:
            i += 1
    lines.append((start, len(source)))
    return lines


def units(s: str, encoding: str) -> int:
    if encoding == "utf-32":
        return len(s)
    if encoding == "utf-16":
        return len(s.encode("utf-16-le", "surrogatepass")) // 2
    return len(s.encode("utf-8", "surrogatepass"))


def model_scrub(s: str) -> str:
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in s)


def model_offset(source: str, line: int, character: int, encoding: str) -> int:
    lines = model_lines(source)
    if line >= len(lines):
        return len(source)
    start, end = lines[line]
    i, count = start, 0
    while i < end and count < character:
        count += units(source[i], encoding)
        i += 1
    return i


# ---- the check ---------------------------------------------------------------------------------


def check(source: str, line: int, character: int, encoding: str,
          edit: tuple[int, int, int, int, str] | None = None) -> None:
    codec = PositionCodec(encoding)
    doc = TextDocument("file:///fuzz.txt", source, position_codec=codec)
    lines = model_lines(source)
    position = types.Position(line=line, character=character)

    offset = model_offset(source, line, character, encoding)
    index = min(line, len(lines) - 1)
    start, end = lines[index] if line < len(lines) else (lines[-1][0], len(source))

    ctx = cursor_context(doc, position)
    assert (position.line, position.character) == (line, character), "the client's Position was changed"
    assert ctx.offset == offset, (ctx.offset, offset)
    clean = model_scrub(source)
    assert ctx.prefix == clean[max(0, offset - len(ctx.prefix)) : offset] and len(ctx.prefix) >= min(offset, 1000)
    assert ctx.suffix == clean[offset : offset + len(ctx.suffix)] and len(ctx.suffix) >= min(len(source) - offset, 1000)
    assert ctx.line_prefix == clean[start:offset], (ctx.line_prefix, clean[start:offset])
    assert ctx.line_suffix == clean[offset:end], (ctx.line_suffix, clean[offset:end])

    clamped = clamp_position(doc, position)
    assert clamped.line == index, (clamped, index)
    assert clamped.character == units(source[start:offset], encoding), clamped
    assert model_offset(source, clamped.line, clamped.character, encoding) == offset

    # textDocument/completion replaces the word before the cursor: its start must be that word's.
    word = completion._word_before(ctx.line_prefix)
    word_start = clamped.character - codec.client_num_units(word)
    assert word_start >= 0 and model_offset(source, clamped.line, word_start, encoding) == offset - len(word)

    # An inline item that already contains the rest of the line replaces it: to the line's end.
    items = inline_completion._items(None, doc.uri, clamped, "x" + ctx.line_suffix.strip(), ctx, codec)
    assert items, "a non-blank completion gives an item"
    rng = items[0].range
    assert rng.start == clamped
    if ctx.line_suffix.strip():
        assert rng.end.line == clamped.line
        assert model_offset(source, rng.end.line, rng.end.character, encoding) == end
        assert rng.end.character == units(source[start:end], encoding), "past the end of the line"
    else:
        assert rng.end == clamped

    lsp_doc = LspTextDocument("file:///fuzz.txt", source, position_codec=codec)
    got = lsp_doc.lines
    assert "".join(got) == source
    assert len(got) == len(lines) - (1 if lines[-1][0] == len(source) else 0), (got, lines)
    assert lsp_doc.offset_at_position(position) == offset

    if edit is not None:
        l1, c1, l2, c2, new = edit
        a = model_offset(source, l1, c1, encoding)
        b = model_offset(source, l2, c2, encoding)
        a, b = min(a, b), max(a, b)
        rng = types.Range(start=types.Position(l1, c1), end=types.Position(l2, c2))
        lsp_doc.apply_change(types.TextDocumentContentChangePartial(range=rng, text=new))
        assert lsp_doc.source == source[:a] + new + source[b:], (lsp_doc.source, source[:a] + new + source[b:])


def _number(b: Bytes) -> int:
    n = b.byte()
    return BIG[n % len(BIG)] if n >= 250 else n % 12


def TestOneInput(data: bytes) -> None:
    b = Bytes(data)
    encoding = ENCODINGS[b.int(3)]
    line, character = _number(b), _number(b)
    edit = None
    if b.flag():
        edit = (_number(b), _number(b), _number(b), _number(b))
    source, new = (text(f) for f in b.fields(2))
    check(source, line, character, encoding, None if edit is None else (*edit, new))


if __name__ == "__main__":
    fuzz(TestOneInput)
