"""Reading a cursor's surroundings from a synced document, within budgets.

A 10 MB file or a binary one must not stall the server: only a bounded window of characters
around the cursor is ever sliced out (the exact token budget is applied later, by the prompt
layout), and documents that look binary get no completion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lsprotocol import types

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


def looks_binary(text: str) -> bool:
    """NUL bytes, or more than 10% control characters in the first 8 KB (runs per keystroke:
    a regex, not a Python loop)."""
    sample = text[:8192]
    return "\x00" in sample or len(_CONTROL.findall(sample)) > len(sample) // 10


def clamp_position(doc, position: types.Position) -> types.Position:
    """Positions past the end clamp to the end (clients do send them after fast edits), counted
    in the negotiated encoding."""
    lines = doc.lines
    if not lines:
        return types.Position(line=0, character=0)
    if position.line < len(lines):
        return position
    if lines[-1].endswith("\n"):  # the document ends with a newline: its end is an empty line
        return types.Position(line=len(lines), character=0)
    last = len(lines) - 1
    return types.Position(line=last, character=doc.position_codec.client_num_units(lines[last]))


def cursor_context(doc, position: types.Position) -> CursorContext:
    """``doc`` is a pygls TextDocument (positions in the negotiated encoding)."""
    source: str = doc.source
    position = clamp_position(doc, position)
    offset = min(doc.offset_at_position(position), len(source))
    line_start = source.rfind("\n", 0, offset) + 1
    line_end = source.find("\n", offset)
    if line_end < 0:
        line_end = len(source)
    return CursorContext(
        prefix=source[max(0, offset - PREFIX_CHARS) : offset],
        suffix=source[offset : offset + SUFFIX_CHARS],
        line_prefix=source[line_start:offset],
        line_suffix=source[offset:line_end].rstrip("\r"),
        offset=offset,
    )
