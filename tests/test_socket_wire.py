"""Socket messages: round-trips, framing, error classification, and the mapping to the queries."""

from __future__ import annotations

import dataclasses
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exlsp.lsp import wire
from exlsp.plugins import api

REQUESTS = [
    wire.HelloRequest(id=1, protocol=1, client="zsh"),
    wire.SuggestRequest(id=2, buffer="git ch", cursor=6, cwd="/home/u/src", shell="zsh", history=["git status"], exit_status=0),
    wire.SuggestRequest(id="s-1", buffer="list big files", mode="describe", candidates=1, git_branch="main", os="linux"),
    wire.CompleteRequest(id=3, prefix="def add(a, b):\n    ", suffix="\n", language="python", path="x.py",
                         open_documents={"y.py": "import x\n"}),
    wire.ChatRequest(id=4, messages=[wire.ChatMessage("system", "be brief"), wire.ChatMessage("user", "hi")],
                     selection="x = 1", max_tokens=64),
    wire.CancelRequest(id=5, target=4),
    wire.CancelRequest(id=6, target="s-1"),
    wire.StatusRequest(id=7),
    wire.ChatRequest(id=8, messages=[wire.ChatMessage("user", "and then?")], session="proj/feature-1"),
    wire.SessionsRequest(id=9, limit=5),
    wire.SessionRequest(id=10, session="a", limit=3),
    wire.SessionDeleteRequest(id=11, session="a"),
]
REPLIES = [
    wire.DeltaReply(id=4, text="Hello\nworld"),
    wire.DoneReply(id=1, server="exlsp", version="0.1.0", protocol=1),
    wire.DoneReply(id=2, suggestions=[wire.Suggestion("git checkout main", "low", "")]),
    wire.DoneReply(id=3, text="return a + b", stop_reason="eos", prompt_tokens=9, reused_tokens=4, generated_tokens=5,
                   ttft_ms=1.5, total_ms=3.25),
    wire.DoneReply(id=7, status={"model": "m", "lanes": [{"tokens": 3}], "memory": None}),
    wire.ErrorReply(id=None, code=wire.PARSE_ERROR, message="JSON is malformed"),
    wire.CancelledReply(id="s-1"),
    wire.DoneReply(id=9, sessions=[wire.SessionInfo("a", "hi", 1.5, 2.5, 2)]),
    wire.DoneReply(id=10, session=wire.SessionInfo("a", "hi", 1.5, 2.5, 2),
                   messages=[wire.StoredMessage("user", "hi", 1.5), wire.StoredMessage("assistant", "he", 2.5, False)]),
    wire.DoneReply(id=11, deleted=False),
]


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: type(m).__name__)
def test_every_request_round_trips(message):
    line = wire.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert wire.decode_request(line) == message
    assert json.loads(line)["type"] == message.__struct_config__.tag


@pytest.mark.parametrize("message", REPLIES, ids=lambda m: type(m).__name__)
def test_every_reply_round_trips(message):
    line = wire.encode(message)
    assert line.count(b"\n") == 1
    assert wire.decode_reply(line) == message


def test_error_with_unknown_id_writes_null():
    assert json.loads(wire.encode(wire.ErrorReply(id=None, code="x", message="y"))) == {
        "type": "error", "id": None, "code": "x", "message": "y"
    }


def test_done_omits_absent_fields_and_suggestions_keep_all_three():
    assert json.loads(wire.encode(wire.DoneReply(id=1))) == {"type": "done", "id": 1}
    done = json.loads(wire.encode(wire.DoneReply(id=2, suggestions=[wire.Suggestion("ls")])))
    assert done["suggestions"] == [{"text": "ls", "risk": "low", "reason": ""}]


def test_the_contract_examples_decode():
    # The request lines of ARCHITECTURE.md, verbatim.
    lines = [
        '{"type":"hello","id":1,"protocol":1,"client":"zsh"}',
        '{"type":"suggest","id":2,"buffer":"git ch","cursor":6,"cwd":"/home/u/src","shell":"zsh",'
        '"history":["git status"],"exit_status":0}',
        '{"type":"suggest","id":2,"buffer":"find big files","mode":"describe"}',
        '{"type":"complete","id":3,"prefix":"def add(a, b):\\n    ","suffix":"\\n","language":"python","path":"x.py"}',
        '{"type":"chat","id":4,"messages":[{"role":"user","content":"..."}]}',
        '{"type":"cancel","id":5,"target":4}',
        '{"type":"status","id":6}',
    ]
    kinds = [type(wire.decode_request(line.encode())).__name__ for line in lines]
    assert kinds == ["HelloRequest", "SuggestRequest", "SuggestRequest", "CompleteRequest", "ChatRequest",
                     "CancelRequest", "StatusRequest"]


def test_unknown_fields_are_ignored_and_missing_ones_default():
    # A newer client talking to this server, and an older one.
    req = wire.decode_request(b'{"type":"suggest","id":1,"buffer":"ls","future_field":{"x":1}}')
    assert req == wire.SuggestRequest(id=1, buffer="ls")
    assert req.history == [] and req.candidates == 3 and req.mode == "complete"


@pytest.mark.parametrize(
    ("line", "code", "rid"),
    [
        (b"{not json", wire.PARSE_ERROR, None),
        (b"\xff\xfe{}", wire.PARSE_ERROR, None),
        (b'{"type":"hello","id":1} trailing', wire.PARSE_ERROR, None),
        (b"[1, 2]", wire.INVALID_REQUEST, None),
        (b'"hello"', wire.INVALID_REQUEST, None),
        (b"null", wire.INVALID_REQUEST, None),
        (b'{"id":3}', wire.INVALID_REQUEST, 3),
        (b'{"type":7,"id":3}', wire.INVALID_REQUEST, 3),
        (b'{"type":"hello"}', wire.INVALID_REQUEST, None),
        (b'{"type":"hello","id":true}', wire.INVALID_REQUEST, None),
        (b'{"type":"hello","id":1.5}', wire.INVALID_REQUEST, None),
        (b'{"type":"hello","id":99999999999999999999999}', wire.INVALID_REQUEST, None),
        (b'{"type":"suggest","id":"a"}', wire.INVALID_REQUEST, "a"),
        (b'{"type":"suggest","id":4,"buffer":12}', wire.INVALID_REQUEST, 4),
        (b'{"type":"complete","id":5,"prefix":"x","max_tokens":0}', wire.INVALID_REQUEST, 5),
        (b'{"type":"chat","id":6,"messages":[]}', wire.INVALID_REQUEST, 6),
        (b'{"type":"chat","id":6,"messages":[{"role":"robot","content":"x"}]}', wire.INVALID_REQUEST, 6),
        (b'{"type":"cancel","id":7}', wire.INVALID_REQUEST, 7),
        (b'{"type":"explode","id":8}', wire.UNKNOWN_TYPE, 8),
        (b'{"type":"done","id":9}', wire.UNKNOWN_TYPE, 9),
    ],
)
def test_bad_lines_are_classified(line, code, rid):
    with pytest.raises(wire.WireError) as caught:
        wire.decode_request(line)
    err = caught.value
    assert (err.code, err.id) == (code, rid)
    assert err.message and "\n" not in err.message
    assert wire.decode_reply(wire.encode(err.reply())) == wire.ErrorReply(id=rid, code=code, message=err.message)


def test_validation_messages_name_the_field():
    with pytest.raises(wire.WireError, match=r"\$\.buffer"):
        wire.decode_request(b'{"type":"suggest","id":4,"buffer":12}')


def _query_fields(cls) -> dict[str, object]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = "required"
    return out


def _wire_fields(cls) -> dict[str, object]:
    info = msgspec.inspect.type_info(cls)
    out = {}
    for f in info.fields:
        if f.name == "id":
            continue
        if f.required:
            out[f.name] = "required"
        elif f.default_factory is not msgspec.NODEFAULT:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = f.default
    return out


@pytest.mark.parametrize(
    ("request_cls", "query_cls"),
    [(wire.SuggestRequest, api.ShellQuery), (wire.CompleteRequest, api.CompletionQuery), (wire.ChatRequest, api.ChatQuery)],
)
def test_requests_mirror_the_queries(request_cls, query_cls):
    # The socket adds no meaning of its own: same fields, same defaults as the assistant's queries.
    assert _wire_fields(request_cls) == _query_fields(query_cls)


def test_to_query_builds_the_assistants_objects():
    chat = REQUESTS[4].to_query()
    assert isinstance(chat, api.ChatQuery)
    assert chat.messages == [api.ChatMessage("system", "be brief"), api.ChatMessage("user", "hi")]
    assert chat.selection == "x = 1" and chat.max_tokens == 64
    shell = REQUESTS[1].to_query()
    assert shell == api.ShellQuery(buffer="git ch", cursor=6, shell="zsh", cwd="/home/u/src", history=["git status"],
                                   exit_status=0)
    code = REQUESTS[3].to_query()
    assert code.open_documents == {"y.py": "import x\n"} and code.language == "python"


def test_type_tables_match_the_unions():
    assert set(wire.REQUEST_TYPES) == {"hello", "suggest", "complete", "chat", "cancel", "status",
                                       "sessions", "session", "session_delete"}
    assert set(wire.REPLY_TYPES) == {"delta", "done", "error", "cancelled"}
    assert set(wire.ERROR_CODES) == {"parse_error", "invalid_request", "unknown_type", "duplicate_id", "too_large",
                                     "too_many_requests", "internal", "not_found"}


@given(st.text())
def test_any_text_stays_on_one_line(text):
    line = wire.encode(wire.DeltaReply(id=1, text=text))
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert wire.decode_reply(line).text == text


@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_raises_only_wire_errors(data):
    try:
        wire.decode_request(data)
    except wire.WireError as exc:
        assert exc.code in wire.ERROR_CODES
