"""What the fuzz harnesses share: turning fuzzer bytes into values, and running under atheris.

Every harness in this folder is a script with ``TestOneInput(data: bytes)``. Run as a script it
fuzzes with atheris (libFuzzer flags pass through: ``python tests/fuzz/fuzz_wire.py
-max_total_time=60 tests/fuzz/corpus/wire``); imported, it is a plain function that pytest
replays the corpus through (``tests/test_fuzz_corpus.py``), so no test needs atheris.

Inputs are decoded by ``Bytes``, not atheris' ``FuzzedDataProvider``, for that reason. Text is
UTF-8 with a few ASCII control bytes standing for the characters that break position and
line-ending code (CRLF halves, form feed, U+2028, an astral character...), so the fuzzer finds
them in a byte or two, and corpus files stay readable.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator

# Control bytes that stand for a troublesome character (the others stay themselves).
SPECIAL = {
    0x01: "\r",
    0x02: "\r\n",
    0x03: "\u2028",  # a line break to str.splitlines, not to LSP
    0x04: "\x0c",  # form feed, likewise
    0x05: "\U0001f600",  # two UTF-16 units, four UTF-8 bytes
    0x06: "\u00e9",  # two UTF-8 bytes
    0x07: "\u4e2d",  # three UTF-8 bytes
    0x0E: "\x85",  # NEL: another str.splitlines break
    0x0F: "\ud800",  # a lone surrogate: JSON (and so LSP) can carry one
}
_TABLE = {code: char for code, char in SPECIAL.items()}


def text(data: bytes) -> str:
    """Fuzzer bytes as text: UTF-8 (invalid sequences become U+FFFD), special control bytes
    mapped through ``SPECIAL``."""
    return data.decode("utf-8", "replace").translate(_TABLE)


def untext(value: str) -> bytes:
    """The inverse of ``text`` for strings without U+FFFD (to write readable seed files)."""
    reverse = {char: bytes([code]) for code, char in SPECIAL.items()}
    out = bytearray()
    i = 0
    while i < len(value):
        if value.startswith("\r\n", i):
            out += b"\x02"
            i += 2
            continue
        ch = value[i]
        out += reverse.get(ch) or ch.encode("utf-8")
        i += 1
    return bytes(out)


class Bytes:
    """Consumes fuzzer bytes from the front; past the end everything reads as zero/empty."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, limit: int) -> int:
        """An int in [0, limit): one byte for small limits, two for larger."""
        if limit <= 256:
            return self.byte() % limit
        return (self.byte() << 8 | self.byte()) % limit

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def fields(self, count: int, sep: bytes = b"\x00") -> list[bytes]:
        """The rest, split into exactly ``count`` fields (missing ones empty)."""
        parts = self.data[self.pos :].split(sep, count - 1)
        self.pos = len(self.data)
        return parts + [b""] * (count - len(parts))

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


@contextlib.contextmanager
def instrumented(name: str) -> Iterator[None]:
    """Around a harness's imports of exlsp: with atheris, when run as a script, those modules
    get coverage instrumentation; otherwise nothing happens."""
    if name != "__main__":
        yield
        return
    import atheris

    with atheris.instrument_imports(include=["exlsp"]):
        yield


def fuzz(test_one_input: Callable[[bytes], Any], argv: list[str] | None = None) -> None:
    """Run libFuzzer on ``test_one_input`` (the harness's ``__main__``)."""
    import atheris

    atheris.Setup(argv if argv is not None else sys.argv, test_one_input)
    atheris.Fuzz()
