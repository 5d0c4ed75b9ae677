"""Fuzz what exlsp reads from LSP clients' JSON itself (pygls has no types for it): ``exlsp/chat``
params (``features/chat.py``, through ``features/params.py``), ``workspace/executeCommand``
``exlsp.accept`` arguments (``features/commands.py``), ``exlsp/status`` (``features/status.py``)
and the settings of ``initializationOptions`` / ``didChangeConfiguration`` (``config.py``).

Input: the first byte picks the target (``c`` chat, ``a`` accept, ``s`` settings, ``t`` status;
any other byte modulo 4). The rest is either JSON text (when it starts with ``{`` or ``[``; read
with ``json.loads`` as pygls does, NaN included) or, more useful to a fuzzer, bytes that build a
JSON value from a vocabulary of the keys and values these methods use.

Checked: chat params are either refused with ``InvalidParams`` or give a query without an
exception (max_tokens >= 1, the selection a piece of the document, every text valid UTF-8 for
the tokenizer); ``exlsp.accept`` counts one
acceptance whatever its arguments; status encodes as JSON; settings never raise, stay in range,
warn in bounded text, and survive a round trip unchanged and without warnings.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from collections import Counter
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fuzzlib import Bytes, fuzz, instrumented, text  # noqa: E402

with instrumented(__name__):
    import msgspec
    from pygls.exceptions import JsonRpcInvalidParams
    from pygls.protocol import _dict_to_object
    from pygls.workspace import TextDocument

    from exlsp.lsp.config import Settings, parse_settings
    from exlsp.lsp.features import chat, commands, status

TARGETS = "cast"
KEYS = (
    "messages", "role", "content", "textDocument", "uri", "selection", "start", "end", "line", "character",
    "workDoneToken", "partialResultToken", "maxTokens", "completion", "chat", "plugins", "exlsp", "enabled",
    "fallback", "autoTrigger", "budgetTokens", "timeBudgetMs", "maxCharsRight", "maxDocumentBytes", "kind",
    "chars", "type_name", "_private", "class", "1st", "max_tokens", "", "user",
)  # fmt: skip
DOC_URI = "file:///t/doc.py"
STRINGS = ("user", "assistant", "system", "tool", "auto", "on", "off", "hi", "completion", DOC_URI,
           "file:///t/other.py", "Object", "1bad", "")  # fmt: skip
NUMBERS = (0, 1, -1, 7, 2**31 - 1, 2**31, 2**63, -(2**63) - 1, 10**30)
FLOATS = (math.nan, math.inf, -math.inf, -0.0, 0.5, 1e308, 64.0)
DOC_TEXT = "import os\r\n\x0cdef f(x):\n    return x  # \U0001f600\rend\n"


def build(b: Bytes, depth: int = 0) -> Any:
    kind = b.byte() % 10
    if depth >= 5 and kind >= 7:
        kind %= 7
    if kind == 0:
        return None
    if kind == 1:
        return b.flag()
    if kind == 2:
        return NUMBERS[b.int(len(NUMBERS))] if b.flag() else b.byte() - 16
    if kind == 3:
        return FLOATS[b.int(len(FLOATS))]
    if kind == 4:
        return STRINGS[b.int(len(STRINGS))]
    if kind == 5:
        n = b.byte() % 16
        raw = bytes(b.byte() for _ in range(n))
        return text(raw)
    if kind == 6:
        return {}
    if kind in (7, 8):
        return {KEYS[b.int(len(KEYS))]: build(b, depth + 1) for _ in range(b.byte() % 5)}
    return [build(b, depth + 1) for _ in range(b.byte() % 4)]


# ---- fakes ------------------------------------------------------------------------------------


class _Assistant:
    def __init__(self) -> None:
        self.kinds: list[Any] = []

    def accept(self, kind: str = "completion") -> None:
        self.kinds.append(kind)

    def status(self) -> dict[str, Any]:
        return {"model": "fake", "accepted": len(self.kinds)}


def fake_ls() -> Any:
    doc = TextDocument(DOC_URI, DOC_TEXT, language_id="python")
    workspace = SimpleNamespace(text_documents={DOC_URI: doc}, get_text_document=lambda uri: doc,
                                position_encoding="utf-16")
    state = SimpleNamespace(settings=Settings(), counters=Counter(), assistant=_Assistant(), load_error=None,
                            inflight=SimpleNamespace(attached=0, superseded=0))
    return SimpleNamespace(exlsp=state, workspace=workspace, protocol=SimpleNamespace(_workspace=workspace))


# ---- checks -----------------------------------------------------------------------------------


def _as_pygls_params(params: Any) -> Any:
    """What pygls hands a custom method: objects as namedtuples (or a failure it answers)."""
    return _dict_to_object(copy.deepcopy(params))


def check_chat(params: Any) -> None:
    try:
        converted = _as_pygls_params(params)
    except (ValueError, TypeError, RecursionError):
        return  # pygls fails to convert it and answers an error itself (not exlsp's code)
    try:
        parsed = chat.parse(converted)
    except JsonRpcInvalidParams:
        return
    ls = fake_ls()
    query = chat._query(ls, parsed)
    assert query.messages and query.max_tokens >= 1, query
    for piece in [m.content for m in query.messages] + [query.document or "", query.selection or ""]:
        piece.encode("utf-8")  # the tokenizer's demand: no lone surrogate reaches the model
    if query.selection is not None:
        assert query.selection in DOC_TEXT, query.selection
        assert parsed.selection is not None and parsed.text_document is not None


def check_accept(params: Any) -> None:
    ls = fake_ls()
    args = params if isinstance(params, list) else [params]
    result = commands.accept(ls, *args)
    assert result == {"accepted": 1}
    assert len(ls.exlsp.assistant.kinds) == 1 and isinstance(ls.exlsp.assistant.kinds[0], str)


def check_status(params: Any) -> None:
    coro = status.handle(fake_ls(), params)
    try:
        coro.send(None)
    except StopIteration as done:
        result = done.value
    else:  # pragma: no cover - the handler does not await
        coro.close()
        raise AssertionError("exlsp/status awaited something")
    msgspec.json.encode(result)


def check_settings(params: Any) -> None:
    layers = params if isinstance(params, list) and params else [params]
    settings, warnings = parse_settings(*layers)
    assert isinstance(settings, Settings)
    for warning in warnings:
        assert isinstance(warning, str) and len(warning) < 600, warning
        warning.encode("utf-8")  # it is logged and shown
    c = settings.completion
    assert c.max_tokens >= 1 and c.budget_tokens >= 1 and c.max_chars_right >= 0 and c.max_document_bytes >= 0
    assert c.time_budget_ms >= 0 and settings.chat.max_tokens >= 1
    again, more = parse_settings(msgspec.to_builtins(settings))
    assert again == settings and not more, (again, more)


CHECKS = {"c": check_chat, "a": check_accept, "s": check_settings, "t": check_status}


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    first = chr(data[0])
    target = first if first in CHECKS else TARGETS[data[0] % len(TARGETS)]
    rest = data[1:]
    if rest[:1] in (b"{", b"["):
        try:
            params = json.loads(rest.decode("utf-8"))
        except (ValueError, RecursionError):
            return  # pygls answers a parse error; exlsp never sees it
    else:
        params = build(Bytes(rest))
    CHECKS[target](params)


if __name__ == "__main__":
    fuzz(TestOneInput)
