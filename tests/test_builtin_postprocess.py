"""Post-processors: golden cases per rule, each run through its rule alone and the whole chain.

``tests/data/postprocess/<rule>.json`` holds a list of cases: {name, prefix, suffix, language,
multiline, completion, expected}. Every case must give ``expected`` both ways, so the rules stay
composable: no rule undoes another's work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pluggy
import pytest

from exlsp.plugins import PROJECT, hookspecs
from exlsp.plugins.api import PostContext, PostProcessor
from exlsp.plugins.builtin import postprocess
from exlsp.plugins.builtin.postprocess import LineLimit, apply, decide_multiline

DATA = Path(__file__).parent / "data" / "postprocess"
RULES = {p.name: p for p in postprocess.PROCESSORS}
CASES = [
    pytest.param(rule, case, id=f"{rule}: {case['name']}")
    for rule in sorted(RULES)
    for case in json.loads((DATA / f"{rule}.json").read_text(encoding="utf-8"))
]


def registered() -> list:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(postprocess)
    found: list = []
    pm.hook.exlsp_register_postprocessors(register=found.append)
    return found


def context_of(case: dict) -> PostContext:
    return PostContext(
        prefix=case["prefix"], suffix=case["suffix"], language=case["language"], multiline=case["multiline"]
    )


def test_every_rule_has_golden_cases():
    assert {p.stem for p in DATA.glob("*.json")} == set(RULES)
    for rule in RULES:
        cases = json.loads((DATA / f"{rule}.json").read_text(encoding="utf-8"))
        assert len(cases) >= 5, rule
        assert {"name", "prefix", "suffix", "language", "multiline", "completion", "expected"} <= set(cases[0])
        texts = "".join(c["prefix"] + c["suffix"] + c["completion"] for c in cases)
        assert "\r\n" in texts and "\t" in texts and any(ord(ch) > 127 for ch in texts), f"{rule}: edge cases"
        assert any(c["suffix"] == "" for c in cases), f"{rule}: an empty suffix"


@pytest.mark.parametrize("rule, case", CASES)
def test_golden_case_through_its_rule(rule, case):
    assert RULES[rule].process(case["completion"], context_of(case)) == case["expected"]


@pytest.mark.parametrize("rule, case", CASES)
def test_golden_case_through_the_chain(rule, case):
    assert apply(case["completion"], context_of(case), registered()) == case["expected"]


def test_registered_processors_in_order():
    found = registered()
    assert [(p.name, p.order) for p in sorted(found, key=lambda p: p.order)] == [
        ("line_limit", 10), ("scope_end", 20), ("suffix_overlap", 30), ("bracket_balance", 40), ("drop_empty", 90),
    ]  # fmt: skip
    assert all(isinstance(p, PostProcessor) and p.kinds == frozenset({"completion"}) for p in found)
    assert postprocess.exlsp_default_settings() == {"max_lines": 8}


def test_chain_skips_other_kinds():
    ctx = PostContext(prefix="", suffix="", kind="chat")
    assert apply("  \n", ctx) == "  \n"


def test_max_lines_setting():
    rule = LineLimit()
    rule.configure({"max_lines": 2})
    assert rule.process("a\nb\nc", PostContext(prefix="", suffix="")) == "a\nb"
    rule.configure({"max_lines": 0})  # out of range: the last good value stays
    rule.configure({"max_lines": True})
    assert rule.max_lines == 2


@pytest.mark.parametrize(
    "prefix, suffix, multiline",
    [
        ("def f(x):\n    ", "\n", True),  # an empty line in a block
        ("", "", True),  # an empty file
        ("def f(x):", "\n    pass\n", True),  # the end of a line that opens a block
        ("if (ok) {", "}", True),  # ... with an auto-inserted brace after the cursor
        ("items.map((x) =>", ")", True),
        ("foo(", ")", True),
        ("# add the two numbers", "\n", True),  # a comment says what comes next
        ("x = comp", "ute(a)\n", False),  # inside a word
        ("print(", "total)\n", False),  # code to the right of the cursor
        ("x = 1", "\n", False),  # the end of a plain statement
        ("return a +", "\r\n", False),
        ("\tname = \"héllo\"", "", False),
        ("\t", "\r\nx", True),
        ("*ptr = 5;", "\n", False),  # a dereference, not a comment
        (" * Returns the sum.", "\n", True),
    ],
)
def test_decide_multiline(prefix, suffix, multiline):
    assert decide_multiline(prefix, suffix) is multiline
