"""docs/protocol.md and docs/protocol.schema.json are generated from lsp/wire.py and up to date."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec

from exlsp.lsp import protocol_doc, wire


def test_committed_docs_are_up_to_date():
    stale = protocol_doc.stale()
    assert not stale, f"regenerate with: python -m exlsp.lsp.protocol_doc ({', '.join(map(str, stale))})"


def test_check_command(tmp_path):
    cmd = [sys.executable, "-m", "exlsp.lsp.protocol_doc", "--docs", str(tmp_path)]
    assert subprocess.run([*cmd, "--check"], capture_output=True).returncode == 1
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "--check"], capture_output=True).returncode == 0
    assert (tmp_path / "protocol.md").read_text() == protocol_doc.render_markdown()


def test_every_message_and_error_code_is_documented():
    doc = protocol_doc.render_markdown()
    for tag in [*wire.REQUEST_TYPES, *wire.REPLY_TYPES]:
        assert f"### `{tag}`" in doc
    for code in wire.ERROR_CODES:
        assert f"| `{code}` |" in doc


def test_done_fields_table_covers_every_field():
    listed = {f for fields in protocol_doc.DONE_FIELDS.values() for f in fields}
    assert listed == set(wire.DoneReply.__struct_fields__) - {"id"}


def test_examples_are_messages_the_codecs_accept():
    for direction, message in protocol_doc.SESSION:
        line = wire.encode(message)
        decoded = wire.decode_request(line) if direction == ">" else wire.decode_reply(line)
        assert decoded == message
    for line, reply in protocol_doc.BAD_LINES:
        try:
            wire.decode_request(line.encode())
        except wire.WireError as exc:
            assert (exc.code, exc.id) == (reply.code, reply.id)
        else:
            raise AssertionError(f"{line} was accepted")


def test_schema_names_every_struct():
    schema = json.loads(protocol_doc.render_schema())
    names = {cls.__name__ for cls in (*wire.Request.__args__, *wire.Reply.__args__, wire.ChatMessage, wire.Suggestion)}
    assert names <= set(schema["$defs"])
    assert schema["$defs"]["Request"]["discriminator"]["propertyName"] == "type"
    assert set(schema["$defs"]["Reply"]["discriminator"]["mapping"]) == set(wire.REPLY_TYPES)
    # Generated from the same Structs as the decoders: the schema of each is msgspec's.
    assert schema["$defs"]["HelloRequest"]["properties"]["type"] == msgspec.json.schema(wire.HelloRequest)["$defs"][
        "HelloRequest"
    ]["properties"]["type"]
