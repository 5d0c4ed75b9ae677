"""Fuzz the socket protocol's decoder, ``exlsp.lsp.wire.decode_request``, with raw line bytes.

Whatever the bytes, the decoder either returns a request or raises ``WireError`` (never anything
else: the socket server would drop the whole connection), and:

- a request survives encode -> decode unchanged, and turns into its query;
- an error has a documented code, an id that fits the protocol, and encodes as one line;
- ``parse_error`` exactly when the bytes are not JSON at all; otherwise the reply carries the
  request's id whenever the line had a usable one.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzzlib import fuzz, instrumented  # noqa: E402

with instrumented(__name__):
    import msgspec

    from exlsp.lsp import wire


def _usable_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str) and len(value) <= 256


def _plain_json(line: bytes) -> tuple[bool, object]:
    try:
        return True, msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return False, None


def check(line: bytes) -> None:
    try:
        request = wire.decode_request(line)
    except wire.WireError as exc:
        assert exc.code in wire.ERROR_CODES, exc.code
        assert exc.id is None or _usable_id(exc.id), exc.id
        encoded = wire.encode(exc.reply())
        assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
        assert isinstance(wire.decode_reply(encoded), wire.ErrorReply)
        is_json, raw = _plain_json(line)
        assert (exc.code == wire.PARSE_ERROR) == (not is_json), (exc.code, is_json)
        if is_json and isinstance(raw, dict) and _usable_id(raw.get("id")):
            assert exc.id == raw["id"], (exc.id, raw.get("id"))
        return
    assert _usable_id(request.id)
    encoded = wire.encode(request)
    assert encoded.count(b"\n") == 1
    assert wire.decode_request(encoded) == request
    if isinstance(request, (wire.SuggestRequest, wire.CompleteRequest, wire.ChatRequest)):
        request.to_query()


def TestOneInput(data: bytes) -> None:
    check(data)


if __name__ == "__main__":
    fuzz(TestOneInput)
