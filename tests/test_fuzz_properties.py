"""Property-based tests (hypothesis) of what the fuzz harnesses check, on generated structured
inputs instead of fuzzer bytes: the socket decoder and framing, the LSP params exlsp decodes
itself, LSP position conversion against an independent model, and the post-processors.

The properties live in the harnesses (``tests/fuzz/fuzz_*.py``, see their docstrings); here
hypothesis feeds them values a byte fuzzer rarely builds: valid requests with one field wrong,
documents mixing every line ending, completions that repeat the suffix. Derandomized, so a run
is repeatable; docs/fuzzing.md says how to run them longer. The last test takes what fuzzing
found through the real language server and the real default model.
"""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from exlsp.lsp.documents import LspTextDocument, cursor_context, use_lsp_documents
from exlsp.lsp.inprocess import connect, initialize_params, inline_params, open_document
from exlsp.lsp.server import ServerState, build_server
from exlsp.plugins.assistant import Assistant
from exlsp.plugins.manager import PluginManager

from test_fuzz_corpus import harness  # the harnesses, loaded once for both files




wire_h = harness("wire")
framing_h = harness("framing")
params_h = harness("lsp_params")
positions_h = harness("positions")
post_h = harness("postprocess")

SETTINGS = settings(deadline=None, derandomize=True, max_examples=400,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# ---- JSON values ----------------------------------------------------------------------------

ODD = "\r\n\t\x0c\u2028\x85\U0001f600\u00e9\ud800\x00"
texts = st.text(alphabet=st.sampled_from("ab x_(){}[]:;,.'\"\\#" + ODD), max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=True), texts,
    st.sampled_from(["user", "assistant", "system", "hello", "complete", "chat", "auto", "on", "off", "file:///t/doc.py"]),
)  # fmt: skip
keys = st.one_of(st.sampled_from(params_h.KEYS), texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
                           max_leaves=12)  # fmt: skip


def _json_bytes(value) -> bytes | None:
    try:
        return json.dumps(value).encode("utf-8", "surrogatepass")
    except ValueError:
        return None


# ---- the socket decoder ---------------------------------------------------------------------

REQUEST_TYPES = ["hello", "suggest", "complete", "chat", "cancel", "status", "sessions", "nope"]
FIELDS = {
    "buffer": texts, "prefix": texts, "suffix": texts, "cursor": st.integers(-2, 40), "candidates": st.integers(-1, 12),
    "max_tokens": st.integers(-1, 10_000), "messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool"]), "content": texts}), max_size=2),
    "target": st.integers(0, 3), "mode": st.sampled_from(["complete", "describe", "x"]), "open_documents": json_values,
    "time_budget_ms": st.floats(allow_nan=False), "history": st.lists(texts, max_size=2),
}  # fmt: skip
ids = st.one_of(st.integers(-(2**64), 2**64), texts, st.booleans(), st.none(), st.floats(allow_nan=False))


@st.composite
def request_lines(draw) -> bytes:
    obj = {"type": draw(st.sampled_from(REQUEST_TYPES)), "id": draw(ids)}
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=4, unique=True)):
        obj[name] = draw(FIELDS[name])
    if draw(st.booleans()):
        obj.pop(draw(st.sampled_from(sorted(obj))))
    line = _json_bytes(obj) or b"{}"
    if draw(st.integers(0, 9)) == 0:  # damage a byte: invalid UTF-8, a truncated line...
        i = draw(st.integers(0, len(line) - 1))
        line = line[:i] + draw(st.sampled_from([b"\xdf", b"\xff", b"", b"[" * 1200, b"\n"])) + line[i + 1 :]
    return line


@SETTINGS
@given(request_lines())
@example(b'{"\xdfype":"cancel","id":4,"target":3}')
@example(b'{"type":"hello","id":1,"x":' + b"[" * 2000 + b"]" * 2000 + b"}")
def test_wire_decoder(line):
    wire_h.check(line)


@SETTINGS
@given(st.binary(max_size=200))
def test_wire_decoder_on_any_bytes(data):
    wire_h.check(data)


@settings(deadline=None, derandomize=True, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(request_lines(), min_size=1, max_size=6), st.data(), st.sampled_from([24, 64, 1_000_000]))
def test_socket_framing(lines, data, limit):
    """The lines, with random blank lines and line endings, cut into random chunks."""
    stream = b"".join(line.replace(b"\n", b"") + data.draw(st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\n  \n"]))
                      for line in lines)  # fmt: skip
    if data.draw(st.booleans()):
        stream = stream.rstrip(b"\n")  # an unterminated last line
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    framing_h.check(chunks, limit)


# ---- LSP params --------------------------------------------------------------------------------

positions = st.fixed_dictionaries({"line": st.integers(-2, 2**32), "character": st.integers(-2, 2**32)})
chat_params = st.fixed_dictionaries(
    {"messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "\ud800"]),
                                                  "content": texts}), max_size=3)},
    optional={
        "textDocument": st.fixed_dictionaries({"uri": st.sampled_from([params_h.DOC_URI, "file:///t/other.py", ""])}),
        "selection": st.fixed_dictionaries({"start": positions, "end": positions}) | json_values,
        "workDoneToken": st.one_of(texts, st.integers(-(2**40), 2**40), st.booleans()),
        "maxTokens": st.one_of(st.integers(-5, 10**6), st.floats(), texts),
    },
)  # fmt: skip


@SETTINGS
@given(st.one_of(chat_params, json_values))
@example({"messages": [{"role": "user", "content": "x"}], "textDocument": {"uri": "file:///t/doc.py"},
          "selection": {"start": {"line": -1, "character": 0}, "end": {"line": 0, "character": 2}}})  # fmt: skip
@example({"messages": [{"role": "user", "content": "a\udc00"}], "textDocument": {"uri": "file:///t/doc.py"}})
def test_chat_params(params):
    params_h.check_chat(params)


settings_layers = st.fixed_dictionaries(
    {},
    optional={
        "completion": st.dictionaries(st.sampled_from(["enabled", "fallback", "autoTrigger", "maxTokens", "budgetTokens",
                                                       "timeBudgetMs", "maxCharsRight", "maxDocumentBytes", "\ud800"]),
                                      scalars, max_size=4) | json_values,
        "chat": st.dictionaries(st.sampled_from(["maxTokens", "x"]), scalars, max_size=2) | json_values,
        "plugins": json_values,
        "exlsp": json_values,
    },
)  # fmt: skip


@SETTINGS
@given(st.lists(settings_layers | json_values, min_size=1, max_size=3))
def test_settings(layers):
    params_h.check_settings(layers)


@SETTINGS
@given(json_values)
def test_accept_and_status(params):
    params_h.check_accept(params)
    params_h.check_status(params)


# ---- positions -----------------------------------------------------------------------------------

documents = st.text(alphabet=st.sampled_from("ab \t(" + ODD.replace("\x00", "")), max_size=16)
numbers = st.one_of(st.integers(0, 8), st.sampled_from([2**31 - 1, 1000]))


@SETTINGS
@given(documents, numbers, numbers, st.sampled_from(positions_h.ENCODINGS),
       st.none() | st.tuples(numbers, numbers, numbers, numbers, documents))  # fmt: skip
@example("a\x0cb\nc", 1, 0, "utf-16", (1, 0, 1, 1, "X"))
@example("abc\r\ndef", 0, 4, "utf-16", None)
@example("x\U0001f600y", 0, 2, "utf-16", None)
def test_positions_against_the_model(source, line, character, encoding, edit):
    positions_h.check(source, line, character, encoding, edit)


def test_position_model_itself():
    """The model is the specification: check it on hand-made cases, so it cannot drift."""
    m = positions_h
    assert m.model_lines("a\r\nb\rc\nd\x0ce\u2028f") == [(0, 1), (3, 4), (5, 6), (7, 12)]
    assert m.model_lines("") == [(0, 0)] and m.model_lines("x\n") == [(0, 1), (2, 2)]
    assert m.model_offset("x\U0001f600y", 0, 2, "utf-16") == 2  # inside the pair: after it
    assert m.model_offset("x\U0001f600y", 0, 3, "utf-16") == 2
    assert m.model_offset("\u00e9\u4e2dz", 0, 5, "utf-8") == 2
    assert m.model_offset("abc\r\ndef", 0, 99, "utf-32") == 3
    assert m.model_offset("abc\ndef", 7, 0, "utf-16") == 7


# ---- post-processors -----------------------------------------------------------------------------

TOKENS = list("abx_ (){}[]:;,.'\"#/=\t\n\n\n\r") + ["    ", "def ", "return ", "}", "end", "\r\n", "\U0001f600"]
code = st.lists(st.sampled_from(TOKENS), max_size=24).map("".join)


@SETTINGS
@given(code, code, code, st.sampled_from(post_h.LANGUAGES), st.booleans())
@example("print(", ")\n", "a\nb\r\nc)", "python", True)
@example("x = ", "", "y\r\r\nz", "python", False)
def test_postprocessors(prefix, suffix, completion, language, multiline):
    post_h.check(prefix, suffix, completion, language, multiline)


@SETTINGS
@given(code, code, code, st.sampled_from(post_h.LANGUAGES), st.booleans())
@example("x = f(", "value)\n", "compute(value", "python", False)
def test_suffix_is_never_inserted_twice(prefix, suffix, body, language, multiline):
    post_h.check_no_repeat(prefix, suffix, body, language, multiline)


def test_harness_text_round_trip():
    fuzzlib = sys.modules["fuzzlib"]
    sample = "a\r\nb\rc\x0c\u2028\U0001f600\u00e9\u4e2d\x85\ud800 z"
    assert fuzzlib.text(fuzzlib.untext(sample)) == sample


# ---- the fixes, through the real language server and the real default model ----------------------


@pytest.mark.model
async def test_found_inputs_through_the_real_server(real_engine):
    """What fuzzing found, end to end: a document with a lone surrogate still gets completions and
    chat answers (the tokenizer raised on it before), a position after a form feed reads the
    right line, and out-of-range chat params are InvalidParams, not an internal error."""
    manager = PluginManager(local_dirs=[], entry_points=True)
    manager.load()
    state = ServerState(plugins=manager, file_settings={"completion": {"maxTokens": 8}})
    server = build_server(state)
    state.set_assistant(Assistant(real_engine, manager))
    uri = "file:///t/odd.py"
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        await open_document(client, uri, "s = 'caf\udce9'\n\x0c\ndef add(a, b):\n    return ")
        got = await client.text_document_inline_completion_async(inline_params(uri, 3, 11))
        assert isinstance(got, types.InlineCompletionList)
        assert all(item.range.start == types.Position(3, 11) for item in got.items)
        ctx = cursor_context(server.workspace.get_text_document(uri), types.Position(3, 11))
        assert ctx.line_prefix == "    return " and ctx.prefix.startswith("s = 'caf\ufffd'")

        answer = await client.request("exlsp/chat", {"messages": [{"role": "user", "content": "Say hi \udce9"}],
                                                     "textDocument": {"uri": uri}, "maxTokens": 4})  # fmt: skip
        assert answer["generatedTokens"] >= 1
        for bad in ({"selection": {"start": {"line": -1, "character": 0}, "end": {"line": 0, "character": 1}}},
                    {"maxTokens": -5}, {"messages": [{"role": "\ud800", "content": "x"}]}):  # fmt: skip
            with pytest.raises(JsonRpcException) as refused:
                await client.request("exlsp/chat", {"messages": [{"role": "user", "content": "x"}],
                                                    "textDocument": {"uri": uri}, **bad})  # fmt: skip
            assert refused.value.code == -32602, bad


async def test_lsp_documents_keep_incremental_edits_in_place():
    """pygls' own TextDocument applies an edit after a form feed one line too far (str.splitlines
    breaks there, LSP does not); a workspace given ``use_lsp_documents`` applies it in place."""
    manager = PluginManager(local_dirs=[], entry_points=False)
    server = build_server(ServerState(plugins=manager))
    uri = "file:///t/pages.py"
    async with connect(server) as client:
        await client.initialize_async(initialize_params())
        use_lsp_documents(server.workspace)
        await open_document(client, uri, "a = 1\x0c# page 2\r\nb = 2\n")
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(1, 0), end=types.Position(1, 1)), text="B")],
        ))  # fmt: skip
        await client.request("exlsp/status", {})  # the change has been applied once this is answered
        doc = server.workspace.get_text_document(uri)
        assert isinstance(doc, LspTextDocument)
        assert doc.source == "a = 1\x0c# page 2\r\nB = 2\n"
