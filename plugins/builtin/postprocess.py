"""Post-processors for inline completions: what a model writes is rarely exactly what to insert.

They run in ascending ``order``, each on the previous one's output; "" drops the completion:

- ``line_limit`` (10): one line where the cursor asks for one (``PostContext.multiline``, see
  ``decide_multiline``), else at most ``max_lines`` lines;
- ``scope_end`` (20): stop where a line dedents out of the cursor line's block;
- ``suffix_overlap`` (30): drop what repeats the text after the cursor;
- ``bracket_balance`` (40): never close a bracket the text after the cursor already closes;
- ``drop_empty`` (90): nothing but whitespace is no completion; trailing blank lines go.

Golden cases: ``tests/data/postprocess/<name>.json``.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping, Sequence

from exlsp.plugins import hookimpl
from exlsp.plugins.api import PostContext

DEFAULTS: dict[str, Any] = {"max_lines": 8}
COMPLETION = frozenset({"completion"})

# After the cursor, on its line: only what editors auto-insert or what ends a statement.
CLOSERS_ONLY = re.compile(r"[)\]}>'\"`;,:.\s]*")
BLOCK_OPENER = re.compile(r"(?:[:{(\[]|=>|->|\bdo|\bthen|\belse|\bbegin)\s*$")
COMMENT_LINE = re.compile(r"^(?:#|//|--|/\*|\*(?:\s|$)|;)")
CLOSING_LINE = re.compile(r"^\s*(?:[)\]}]|end\b|fi\b|done\b|esac\b)")
HASH_COMMENTS = frozenset({"python", "ruby", "perl", "r", "shellscript", "sh", "bash", "zsh", "fish", "yaml", "toml"})
PAIRS = {")": "(", "]": "[", "}": "{"}
TAB = 4
_FIRST_LINE = re.compile(r"[^\r\n]*")


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").split("\n")


def _indent(line: str) -> int:
    ws = line[: len(line) - len(line.lstrip(" \t"))]
    return len(ws.expandtabs(TAB))


def _cut_lines(text: str, keep: int) -> str:
    """The first ``keep`` lines of ``text`` (any line ending), without trailing blank lines."""
    lines = text.split("\n")
    pieces = lines[:keep]
    while len(pieces) > 1 and not pieces[-1].strip():
        pieces.pop()
    out = "\n".join(pieces)
    # Only the \r of a CRLF the cut went through goes; a kept last line keeps its own \r (taking
    # it made a second pass cut again; found by fuzzing).
    return out.removesuffix("\r") if len(pieces) < len(lines) else out


def decide_multiline(prefix: str, suffix: str) -> bool:
    """Whether to offer several lines: yes on an empty line, after a line that opens a block or a
    comment line, at the end of the line; no with code to the right of the cursor, and no at the
    end of an ordinary statement (the next line is the user's to start)."""
    before = prefix.rsplit("\n", 1)[-1].rstrip("\r")
    after = suffix.split("\n", 1)[0].rstrip("\r")
    if not CLOSERS_ONLY.fullmatch(after):
        return False
    code = before.strip()
    return not code or bool(BLOCK_OPENER.search(code)) or bool(COMMENT_LINE.match(code))


class LineLimit:
    name = "line_limit"
    order = 10
    kinds = COMPLETION

    def __init__(self) -> None:
        self.max_lines = DEFAULTS["max_lines"]

    def configure(self, settings: Mapping[str, Any]) -> None:
        value = settings.get("max_lines")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            self.max_lines = value

    def process(self, text: str, ctx: PostContext) -> str:
        if not ctx.multiline:
            # Up to the first line break of any kind: "x\r\r\n" left "x\r", still two lines
            # to an editor (a lone CR ends a line in LSP; found by fuzzing).
            return _FIRST_LINE.match(text).group()
        lines = text.split("\n")
        # An empty rest of the cursor line is not a line the user sees.
        skip = 1 if len(lines) > 1 and not lines[0].strip() else 0
        if len(lines) <= self.max_lines + skip:
            return text
        return _cut_lines(text, self.max_lines + skip)


class ScopeEnd:
    """Indentation scope, for brace languages as much as for Python: after a line that opens a
    block, the block's lines are indented deeper; the first line that is not ends the completion
    (a closing line like ``}`` at the cursor line's level is kept: it ends the block)."""

    name = "scope_end"
    order = 20
    kinds = COMPLETION

    def process(self, text: str, ctx: PostContext) -> str:
        lines = _lines(text)
        if len(lines) == 1:
            return text
        cursor_line = _lines(ctx.prefix)[-1]
        full = [cursor_line + lines[0], *lines[1:]]
        first = next((i for i, line in enumerate(full) if line.strip()), None)
        if first is None:
            return text
        base = _indent(full[first])
        limit = base + 1 if BLOCK_OPENER.search(full[first].rstrip()) else base
        for i in range(first + 1, len(full)):
            line = full[i]
            if not line.strip() or _indent(line) >= limit:
                continue
            if CLOSING_LINE.match(line) and _indent(line) >= base - (TAB if limit == base else 0):
                return _cut_lines(text, i + 1)
            return _cut_lines(text, i)
        return text


def _overlap(text: str, suffix: str, language: str) -> int:
    """Length of the longest end of ``text`` that the suffix starts with. Short alphanumeric
    overlaps (``a`` before ``a + b``) are chance, and so is a bracket that closes one the
    completion opened itself (``h(2)`` before ``)``)."""
    own = len(_unclosed(text, language))
    for k in range(min(len(text), len(suffix), 400), 0, -1):
        piece = suffix[:k]
        if not text.endswith(piece) or (k < 3 and any(ch.isalnum() for ch in piece)):
            continue
        if any(ch in PAIRS for ch in piece) and len(_unclosed(text[:-k], language)) > own:
            continue
        return k
    return 0


def _same_prefix(text: str, length: int) -> str:
    """The prefix of ``text`` that is ``length`` characters long once its CRLFs are LFs."""
    end = 0
    for _ in range(length):
        end += 2 if text.startswith("\r\n", end) else 1
    return text[:end]


class SuffixOverlap:
    """Drop the lines that repeat the line after the cursor's, and the end that repeats the
    suffix's start (``foo(x)`` before an auto-inserted ``)``)."""

    name = "suffix_overlap"
    order = 30
    kinds = COMPLETION

    def process(self, text: str, ctx: PostContext) -> str:
        plain = text.replace("\r\n", "\n")
        out = self._repeated_lines(plain, ctx)
        suffix = ctx.suffix.replace("\r\n", "\n")
        k = _overlap(out, suffix, ctx.language)
        if k:
            out = out[:-k]
        if out == plain:
            return text
        # ``out`` is a prefix of ``plain``: cut the text itself there, so that its line endings
        # stay as written (turning every \n into \r\n mangled mixed endings; found by fuzzing).
        return _same_prefix(text, len(out))

    @staticmethod
    def _repeated_lines(text: str, ctx: PostContext) -> str:
        following = _lines(ctx.suffix)
        rest, below = following[0], [line.rstrip() for line in following[1:]]
        start = next((j for j, line in enumerate(below) if line.strip()), None)
        if start is None:
            return text
        lines = text.split("\n")
        cursor_line = _lines(ctx.prefix)[-1]
        # The first line counts when it makes a whole line of its own (the cursor on an empty
        # line, nothing after it).
        first = 0 if not cursor_line.strip() and not rest.strip() else 1
        for i in range(first, len(lines)):
            line = (cursor_line + lines[0] if i == 0 else lines[i]).rstrip()
            if not line.strip() or line != below[start]:
                continue
            # A short line (``}``, ``end``) must be confirmed by the next one, or end the text.
            rest_of_text = [x.rstrip() for x in lines[i + 1 :] if x.strip()]
            after = next((x for x in below[start + 1 :] if x.strip()), None)
            if len(line.strip()) >= 4 or not rest_of_text or rest_of_text[0] == after:
                return _cut_lines(text, i) if i else ""
        return text


def _code_chars(text: str, language: str) -> Iterator[tuple[int, str]]:
    """(index, char) outside string literals and line comments, per line (good enough for
    brackets: a string never spans lines here)."""
    hash_comments = language.lower() in HASH_COMMENTS
    quote = ""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            quote = ""
        elif quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif (ch == "#" and hash_comments) or (not hash_comments and text.startswith("//", i)):
            at = text.find("\n", i)
            i = n if at < 0 else at
            continue
        else:
            yield i, ch
        i += 1


def _unclosed(text: str, language: str) -> list[str]:
    stack: list[str] = []
    for _, ch in _code_chars(text, language):
        if ch in "([{":
            stack.append(ch)
        elif ch in PAIRS and stack and stack[-1] == PAIRS[ch]:
            stack.pop()
    return stack


class BracketBalance:
    """The text after the cursor on its line often closes brackets opened before it (editors
    auto-insert them); a completion that closes the same bracket is cut right before it."""

    name = "bracket_balance"
    order = 40
    kinds = COMPLETION

    def process(self, text: str, ctx: PostContext) -> str:
        rest = ctx.suffix.split("\n", 1)[0]
        closers: list[str] = []
        depth = 0
        for _, ch in _code_chars(rest, ctx.language):
            if ch in "([{":
                depth += 1
            elif ch in PAIRS:
                if depth:
                    depth -= 1
                else:
                    closers.append(ch)
        if not closers:
            return text
        opened = _unclosed(ctx.prefix[-8000:], ctx.language)
        own: list[str] = []
        closed = 0  # brackets of the prefix the completion closed so far
        for i, ch in _code_chars(text, ctx.language):
            if ch in "([{":
                own.append(ch)
            elif ch in PAIRS:
                if own:
                    own.pop()
                    continue
                target = opened[-1 - closed] if closed < len(opened) else None
                if closed < len(closers) and closers[closed] == ch and target == PAIRS[ch]:
                    return text[:i].rstrip()
                closed += 1
        return text


class DropEmpty:
    name = "drop_empty"
    order = 90
    kinds = COMPLETION

    def process(self, text: str, ctx: PostContext) -> str:
        if not text.strip():
            return ""
        return re.sub(r"(?:\r?\n[ \t]*)+$", "", text)


PROCESSORS: list[Any] = [LineLimit(), ScopeEnd(), SuffixOverlap(), BracketBalance(), DropEmpty()]


def apply(text: str, ctx: PostContext, processors: Sequence[Any] | None = None) -> str:
    """Run ``processors`` (default: these) as the assistant does: by order, until one drops it."""
    for p in sorted(processors if processors is not None else PROCESSORS, key=lambda p: p.order):
        if ctx.kind in p.kinds:
            text = p.process(text, ctx)
            if not text:
                return ""
    return text


@hookimpl
def exlsp_register_postprocessors(register: Any) -> None:
    for p in PROCESSORS:
        register(p)


@hookimpl
def exlsp_default_settings() -> dict[str, Any]:
    return dict(DEFAULTS)
