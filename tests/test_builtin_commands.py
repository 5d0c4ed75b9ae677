"""Chat slash commands: each turns the selection or file into a system and a user message."""

from __future__ import annotations

import pluggy
import pytest

from exlsp.plugins import PROJECT, hookspecs
from exlsp.plugins.api import ChatCommand, ChatMessage, ChatQuery
from exlsp.plugins.builtin import commands
from exlsp.plugins.builtin.commands import fence

SELECTION = "def add(a, b):\n    return a - b\n"
DOCUMENT = "import math\n\n" + SELECTION


def registered() -> dict:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(commands)
    found: list = []
    pm.hook.exlsp_register_chat_commands(register=found.append)
    return {c.name: c for c in found}


def query(**kw) -> ChatQuery:
    base = dict(messages=[ChatMessage("user", "/x")], document=DOCUMENT, path="src/calc.py", language="python")
    return ChatQuery(**{**base, **kw})


def test_the_four_commands_are_registered():
    found = registered()
    assert sorted(found) == ["doc", "explain", "fix", "test"]
    assert all(isinstance(c, ChatCommand) and c.description for c in found.values())


@pytest.mark.parametrize("name", ["explain", "fix", "test", "doc"])
def test_selection_comes_first(name):
    messages = registered()[name].messages("", query(selection=SELECTION))
    assert [m.role for m in messages] == ["system", "user"]
    user = messages[1].content
    assert fence(SELECTION, "python") in user and "import math" not in user
    assert "selected python code from src/calc.py" in user


@pytest.mark.parametrize("name", ["explain", "fix", "test", "doc"])
def test_whole_document_without_a_selection(name):
    user = registered()[name].messages("", query(selection="  ")).pop().content
    assert fence(DOCUMENT, "python") in user and "the python file src/calc.py" in user


def test_argument_is_passed_on_and_tasks_differ():
    found = registered()
    fix = found["fix"].messages("it subtracts", query(selection=SELECTION))[1].content
    assert "The user adds: it subtracts" in fix and "corrected" in fix
    assert "pytest" in found["test"].messages("", query())[1].content
    assert "Jest" in found["test"].messages("", query(language="typescript"))[1].content
    assert "documentation" in found["doc"].messages("", query())[1].content
    assert "what" in found["explain"].messages("", query())[1].content


def test_no_code_at_all():
    messages = registered()["explain"].messages("what is a monad", query(document=None, path="", language=""))
    assert "No code was selected" in messages[1].content and "what is a monad" in messages[1].content


def test_fences_survive_backticks_and_long_files_are_cut():
    code = 'doc = """\n```python\nx\n```\n"""\n'
    block = fence(code, "python")
    assert block.startswith("````python\n") and block.endswith("\n````")
    cmd = registered()["explain"]
    cmd.configure({"max_code_chars": 2000})
    try:
        user = cmd.messages("", query(document="x = 1\n" * 1000))[1].content
        assert "(truncated)" in user and len(user) < 3000
    finally:
        cmd.configure(commands.DEFAULTS)
    assert commands.exlsp_default_settings() == {"max_code_chars": 24_000}
