"""Generate ``docs/protocol.md`` and ``docs/protocol.schema.json`` from the Structs in ``wire.py``.

``python -m exlsp.lsp.protocol_doc`` rewrites both; ``--check`` only says whether they are up to
date (a test runs it). The examples are Struct instances encoded by the real encoder, so the doc
cannot show a message the server would not accept or send.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

from . import wire

DOCS = Path(__file__).resolve().parents[1] / "docs"
MARKDOWN, SCHEMA = "protocol.md", "protocol.schema.json"

# Which fields of `done` answer which request (a test checks that every field is listed).
DONE_FIELDS: dict[str, list[str]] = {
    "hello": ["server", "version", "protocol"],
    "suggest": ["suggestions"],
    "complete, chat": ["text", "items", "stop_reason", "prompt_tokens", "reused_tokens", "generated_tokens",
                       "ttft_ms", "total_ms"],
    "status": ["status"],
    "cancel": [],
    "sessions": ["sessions"],
    "session": ["session", "messages"],
    "session_delete": ["deleted"],
}

SESSION: list[tuple[str, msgspec.Struct]] = [
    (">", wire.HelloRequest(id=1, client="zsh")),
    ("<", wire.DoneReply(id=1, server="exlsp", version="0.1.0", protocol=wire.PROTOCOL)),
    (">", wire.SuggestRequest(id=2, buffer="git ch", cursor=6, cwd="/home/u/src", shell="zsh", history=["git status"], exit_status=0)),
    ("<", wire.DoneReply(id=2, suggestions=[wire.Suggestion("git checkout main", "low", ""),
                                            wire.Suggestion("git cherry-pick -", "low", "")])),
    (">", wire.CompleteRequest(id=3, prefix="def add(a, b):\n    ", suffix="\n", language="python", path="x.py")),
    (">", wire.ChatRequest(id=4, messages=[wire.ChatMessage("user", "What does git rebase -i do?")])),
    ("<", wire.DeltaReply(id=3, text="return a")),
    ("<", wire.DeltaReply(id=4, text="It lets you")),
    ("<", wire.DeltaReply(id=3, text=" + b")),
    ("<", wire.DoneReply(id=3, text="return a + b", stop_reason="eos", prompt_tokens=14, reused_tokens=12,
                         generated_tokens=5, ttft_ms=9.5, total_ms=21.25)),
    (">", wire.CancelRequest(id=5, target=4)),
    ("<", wire.CancelledReply(id=4)),
    ("<", wire.DoneReply(id=5)),
    (">", wire.StatusRequest(id=6)),
    ("<", wire.DoneReply(id=6, status={"model": "SmolLM2-135M-Instruct", "backend": "llamacpp", "uptime_s": 812.4})),
    (">", wire.SuggestRequest(id=7, buffer="rm -rf ./bu", shell="bash")),
    ("<", wire.DoneReply(id=7, suggestions=[wire.Suggestion("rm -rf ./build", "high", "deletes files recursively: ./build")])),
    (">", wire.ChatRequest(id=8, messages=[wire.ChatMessage("user", "And with --autosquash?")], session="git-help")),
    ("<", wire.DeltaReply(id=8, text="It moves fixup! commits")),
    ("<", wire.DoneReply(id=8, text="It moves fixup! commits next to their targets.", stop_reason="eos",
                         prompt_tokens=96, reused_tokens=80, generated_tokens=11, ttft_ms=12.5, total_ms=60.75)),
    (">", wire.SessionsRequest(id=9, limit=10)),
    ("<", wire.DoneReply(id=9, sessions=[wire.SessionInfo("git-help", "What does git rebase -i do?", 1767225600.0,
                                                          1767225900.5, 4)])),
    (">", wire.SessionRequest(id=10, session="git-help", limit=2)),
    ("<", wire.DoneReply(id=10, session=wire.SessionInfo("git-help", "What does git rebase -i do?", 1767225600.0,
                                                         1767225900.5, 4),
                         messages=[wire.StoredMessage("user", "And with --autosquash?", 1767225899.0),
                                   wire.StoredMessage("assistant", "It moves fixup! commits next to their targets.",
                                                      1767225900.5)])),
    (">", wire.SessionDeleteRequest(id=11, session="git-help")),
    ("<", wire.DoneReply(id=11, deleted=True)),
]
BAD_LINES: list[tuple[str, wire.ErrorReply]] = [
    ("{not json", wire.ErrorReply(id=None, code=wire.PARSE_ERROR, message="JSON is malformed: ...")),
    ('{"type":"sugest","id":8}', wire.ErrorReply(id=8, code=wire.UNKNOWN_TYPE, message="unknown message type 'sugest'")),
    ('{"type":"suggest","id":9}', wire.ErrorReply(id=9, code=wire.INVALID_REQUEST, message="Object missing required field `buffer`")),
]

INTRO = """\
# The exlsp socket protocol (version {protocol})

<!-- Generated from lsp/wire.py by `python -m exlsp.lsp.protocol_doc`: edit wire.py, not this file. -->

The socket is how shells, the `exlsp` CLI and scripts talk to the one resident exlsp process of a
user. Editors use LSP on stdio instead. A JSON Schema of every message is in
[`protocol.schema.json`](protocol.schema.json).

## Where the socket is

`$EXLSP_SOCKET` if set, else `$XDG_RUNTIME_DIR/exlsp/exlsp.sock`, else
`${{TMPDIR:-/tmp}}/exlsp-$UID/exlsp.sock`. The directory is 0700 and the socket 0600; the server
checks that the connecting process runs as the same user (`SO_PEERCRED`) and closes the
connection otherwise. A stale socket file left by a dead process is replaced; a live one is never
taken over; the file is removed when exlsp exits. exlsp never executes anything a client sends.

## Framing

- One UTF-8 JSON object per line, ended by `\\n` (JSON strings escape their own newlines), so
  that zsh can speak it with `zsocket` and no subprocess; `socat` and `nc -U` work too. A last
  line without its `\\n`, from a client that then shuts down its writing side (`nc -N`), is read
  as a request too.
- Every message has a `"type"`. Every request has an `"id"` (integer or string) chosen by the
  client and unique among the connection's requests still in flight; every reply carries the `id`
  it answers.
- A request gets any number of `delta` replies, then **exactly one** terminal reply: `done`,
  `error` or `cancelled`. Several requests may be in flight on one connection; their replies
  interleave, each in order. An id may be reused once its terminal reply has been read.
- Fields this document does not list are ignored, so newer clients work with older servers; new
  fields always come with defaults. Absent optional reply fields are omitted, not `null`.
- Closing the connection cancels its requests at their next token. A client that only shuts down
  its writing side (`socat`, `nc -N`) still gets its answers, then the server closes.
- Limits (the defaults): a line of at most 1,000,000 bytes (longer ones get `too_large` and are
  skipped up to their newline); at most 32 requests in flight per connection; a client that stops
  reading for a few seconds while replies wait is disconnected and its requests cancelled.
"""


def _type_name(t: Any) -> str:
    while isinstance(t, mi.Metadata):
        t = t.type
    match t:
        case mi.StrType():
            return "string" + (f" (≤ {t.max_length} chars)" if t.max_length and t.max_length != 256 else "")
        case mi.IntType():
            bounds = [f"≥ {t.ge}" if t.ge is not None and t.ge > -(2**63) else "", f"≤ {t.le}" if t.le is not None and t.le < 2**63 - 1 else ""]
            bounds = [b for b in bounds if b]
            return "integer" + (f" ({', '.join(bounds)})" if bounds else "")
        case mi.FloatType():
            return "number"
        case mi.BoolType():
            return "boolean"
        case mi.NoneType():
            return "null"
        case mi.AnyType():
            return "any"
        case mi.LiteralType():
            return " \\| ".join(f'`"{v}"`' if isinstance(v, str) else f"`{v}`" for v in t.values)
        case mi.ListType():
            size = f", at least {t.min_length}" if t.min_length else ""
            return f"list of {_type_name(t.item_type)}{size}"
        case mi.DictType():
            return f"object ({_type_name(t.key_type)} → {_type_name(t.value_type)})"
        case mi.StructType():
            return f"[{t.cls.__name__}](#{t.cls.__name__.lower()})"
        case mi.UnionType():
            return " or ".join(_type_name(x) for x in t.types)
    return type(t).__name__


def _description(t: Any) -> str:
    """The outermost description (a field's own note wins over its type's)."""
    if isinstance(t, mi.Metadata):
        if t.extra_json_schema and "description" in t.extra_json_schema:
            return t.extra_json_schema["description"]
        return _description(t.type)
    if isinstance(t, mi.UnionType):
        return next((d for d in map(_description, t.types) if d), "")
    return ""


def _one_paragraph(text: str | None) -> str:
    # Docstring indentation differs between Python versions (3.13 strips it): normalize it away.
    return " ".join((text or "").split())


def _default(field: mi.Field) -> str:
    if field.required:
        return "required"
    if field.default_factory is not msgspec.NODEFAULT:
        return f"`{json.dumps(field.default_factory())}`"
    return f"`{json.dumps(field.default)}`"


def _struct_section(cls: type[msgspec.Struct], level: str = "###") -> list[str]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    title = f"`{info.tag}`" if info.tag else cls.__name__
    lines = [f"{level} {title}", "", f"<a id=\"{cls.__name__.lower()}\"></a>`{cls.__name__}`. {_one_paragraph(cls.__doc__)}", ""]
    lines += ["| field | type | default | notes |", "|---|---|---|---|"]
    if info.tag_field:
        lines.append(f'| `{info.tag_field}` | `"{info.tag}"` | required | |')
    for f in info.fields:
        lines.append(f"| `{f.encode_name}` | {_type_name(f.type)} | {_default(f)} | {_description(f.type)} |")
    return lines + [""]


def _json_line(message: msgspec.Struct) -> str:
    return wire.encode(message).decode().rstrip("\n")


def render_markdown() -> str:
    out = [INTRO.format(protocol=wire.PROTOCOL), "## Requests", ""]
    for cls in wire.Request.__args__:  # type: ignore[attr-defined]
        out += _struct_section(cls)
        example = next((m for d, m in SESSION if d == ">" and type(m) is cls), None)
        if example is not None:
            out += ["```json", _json_line(example), "```", ""]
    out += ["## Replies", ""]
    for cls in wire.Reply.__args__:  # type: ignore[attr-defined]
        out += _struct_section(cls)
    out += ["What `done` carries, by the request it ends:", "", "| request | fields |", "|---|---|"]
    out += [f"| {kind} | {', '.join(f'`{f}`' for f in fields) or '(none)'} |" for kind, fields in DONE_FIELDS.items()]
    out += ["", "A `suggest`'s text is one line without control characters or terminal escapes; its `risk` "
            "comes from a parse of the command (`low`, `medium`: sudo, overwriting redirections, installs, "
            "uploads, kills; `high`: recursive deletes, disk tools, `curl | sh`, force pushes ...). "
            "exlsp never runs it.", ""]
    out += ["A `chat` with `session` is recorded by the server: `messages` are the new turns (a client may "
            "re-send the whole conversation instead; stored turns are not stored twice), the user's turns are "
            "saved before the answer starts and the answer when it ends, even cut short. `sessions`, `session` "
            "and `session_delete` read and delete them. Details: [chat-sessions.md](chat-sessions.md).", ""]
    out += ["### Nested objects", ""]
    for cls in (wire.ChatMessage, wire.Suggestion, wire.SessionInfo, wire.StoredMessage):
        out += _struct_section(cls, "####")
    out += ["## Error codes", "", "| code | meaning |", "|---|---|"]
    out += [f"| `{code}` | {meaning} |" for code, meaning in wire.ERROR_CODES.items()]
    out += ["", "## A session", "", "`>` client to server, `<` server to client. Requests 3 and 4 stream at the same time.", "", "```"]
    out += [f"{d} {_json_line(m)}" for d, m in SESSION]
    out += ["```", "", "Lines that are not valid requests:", "", "```"]
    for line, reply in BAD_LINES:
        out += [f"> {line}", f"< {_json_line(reply)}"]
    out += ["```", ""]
    return "\n".join(out)


def render_schema() -> str:
    (request, reply), components = msgspec.json.schema_components((wire.Request, wire.Reply))
    for component in components.values():
        if "description" in component:
            component["description"] = _one_paragraph(component["description"])
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"exlsp socket protocol {wire.PROTOCOL}",
        "description": "One JSON object per line: a Request from the client or a Reply from the server.",
        "anyOf": [{"$ref": "#/$defs/Request"}, {"$ref": "#/$defs/Reply"}],
        "$defs": {**components, "Request": request, "Reply": reply},
    }
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    return {MARKDOWN: render_markdown(), SCHEMA: render_schema()}


def stale(docs: Path = DOCS) -> list[Path]:
    """The generated files that are missing or differ from what ``wire.py`` says now."""
    out = []
    for name, text in rendered().items():
        path = docs / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            out.append(path)
    return out


def write(docs: Path = DOCS) -> list[Path]:
    docs.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in rendered().items():
        (docs / name).write_text(text, encoding="utf-8")
        paths.append(docs / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exlsp.lsp.protocol_doc", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated files are out of date")
    parser.add_argument("--docs", type=Path, default=DOCS, help=f"output folder (default {DOCS})")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale(args.docs)
        for path in out_of_date:
            print(f"out of date: {path} (run python -m exlsp.lsp.protocol_doc)", file=sys.stderr)
        return 1 if out_of_date else 0
    for path in write(args.docs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
