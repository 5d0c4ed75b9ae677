"""Fuzz the completion post-processors (``exlsp.plugins.builtin.postprocess``).

Input: one flags byte (bit 0: the cursor asks for several lines; bits 1-3: the language; bit 4:
make the completion end with the suffix's first line), then prefix, suffix and completion text
separated by NUL bytes (text as ``fuzzlib.text`` reads it: CR, CRLF, tabs, astral characters...).

Properties, for every rule alone and for the whole chain:

- nothing raises, ``decide_multiline`` included;
- the output is a prefix of the input: a post-processor only cuts, it never rewrites what the
  model wrote (line endings included);
- ``line_limit``, ``scope_end``, ``bracket_balance`` and ``drop_empty`` are idempotent: what they
  left has nothing more for them to cut;
- a completion that ends with the text after the cursor's line (three characters or more, no
  brackets) loses at least that repetition in ``suffix_overlap``: the suffix is never inserted
  twice.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzzlib import Bytes, fuzz, instrumented, text  # noqa: E402

with instrumented(__name__):
    from exlsp.plugins.api import PostContext
    from exlsp.plugins.builtin import postprocess
    from exlsp.plugins.builtin.postprocess import PAIRS, apply, decide_multiline

LANGUAGES = ("python", "javascript", "rust", "go", "shellscript", "", "c", "ruby")
IDEMPOTENT = {"line_limit", "scope_end", "bracket_balance", "drop_empty"}


def check(prefix: str, suffix: str, completion: str, language: str, multiline: bool) -> None:
    decide_multiline(prefix, suffix)
    ctx = PostContext(prefix=prefix, suffix=suffix, language=language, multiline=multiline)
    for rule in postprocess.PROCESSORS:
        out = rule.process(completion, ctx)
        assert isinstance(out, str)
        assert completion.startswith(out), (rule.name, completion, out)
        if rule.name in IDEMPOTENT:
            again = rule.process(out, ctx)
            assert again == out, (rule.name, out, again)
    out = apply(completion, ctx)
    assert completion.startswith(out), ("chain", completion, out)


def check_no_repeat(prefix: str, suffix: str, body: str, language: str, multiline: bool) -> None:
    """``body`` + the suffix's first line, before that suffix."""
    line = suffix.replace("\r\n", "\n").split("\n", 1)[0]
    usable = 3 <= len(line) <= 400 and "\r" not in line and not any(ch in PAIRS for ch in line)
    if not usable:
        return
    ctx = PostContext(prefix=prefix, suffix=suffix, language=language, multiline=multiline)
    out = postprocess.SuffixOverlap().process(body + line, ctx)
    assert len(out.replace("\r\n", "\n")) <= len(body.replace("\r\n", "\n")), (body, line, out)


def TestOneInput(data: bytes) -> None:
    b = Bytes(data)
    flags = b.byte()
    multiline = bool(flags & 1)
    language = LANGUAGES[(flags >> 1) % len(LANGUAGES)]
    prefix, suffix, completion = (text(f) for f in b.fields(3))
    if flags & 0x10:
        check_no_repeat(prefix, suffix, completion, language, multiline)
    else:
        check(prefix, suffix, completion, language, multiline)


if __name__ == "__main__":
    fuzz(TestOneInput)
