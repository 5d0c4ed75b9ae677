"""Completion prompt formats: family detection from special tokens, and exact token layouts.

Token lists in tests/data/fim_tokens/ were written by hand from each family's published tokenizer
configuration. Text is encoded by a fake that maps each character to one id, so that a prompt's
structure can be compared token by token.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pluggy
import pytest

from exlsp.plugins import PROJECT, hookspecs
from exlsp.plugins.api import CompletionQuery, ContextChunk, ModelInfo, Prompt
from exlsp.plugins.builtin import fim
from exlsp.runtime import SpecialTokens
from exlsp.runtime.backends.exllamav2 import find_special_tokens

DATA = Path(__file__).parent / "data" / "fim_tokens"
FAMILIES = sorted(p.stem for p in DATA.glob("*.json"))
CHAR = 1_000_000  # fake text ids: CHAR + code point, far from any special id


def load(family: str) -> dict:
    return json.loads((DATA / f"{family}.json").read_text(encoding="utf-8"))


def char_encode(text: str) -> list[int]:
    return [CHAR + ord(c) for c in text]


def spm_encode(text: str) -> list[int]:
    """Like SentencePiece with ``add_dummy_prefix``: a space before every encoded text."""
    return char_encode(" " + text)


def special_from(data: dict, *, backend_detection: bool) -> SpecialTokens:
    tokens = data["tokens"]
    ids = {k: (tokens[data[k]] if data[k] else None) for k in ("bos", "eos", "eot")}
    if backend_detection:  # as the ExLlamaV2 backend fills the fim_* ids
        found = find_special_tokens(tokens, bos=ids["bos"], eos=ids["eos"])
        return dataclasses.replace(found, add_bos=data["add_bos"])
    return SpecialTokens(bos=ids["bos"], eos=ids["eos"], eot=ids["eot"], add_bos=data["add_bos"], by_text=dict(tokens))


def model_of(special: SpecialTokens, *, n_ctx: int = 4096, encode=char_encode) -> ModelInfo:
    return ModelInfo(
        name="test", special=special, chat_template=None, n_ctx=n_ctx,
        count_tokens=lambda text: len(encode(text)), encode=encode,
    )  # fmt: skip


def registered_formats() -> list:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(fim)
    found: list = []
    pm.hook.exlsp_register_prompt_formats(register=found.append)
    return found


def choose(model: ModelInfo):
    """The assistant's rule: highest score > 0 wins, ties go to the one registered last."""
    best = None
    for fmt in registered_formats():
        score = fmt.score(model)
        if score > 0 and (best is None or score >= best[0]):
            best = (score, fmt)
    assert best is not None
    return best[1]


# ---- detection ----------------------------------------------------------------------------------


def test_every_family_has_a_token_file():
    assert set(FAMILIES) == {
        "qwen2.5-coder", "starcoder", "starcoder2", "codellama", "deepseek-coder", "codestral", "smollm2", "llama3",
    }  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend_detection", [False, True], ids=["by_text", "fim_ids"])
def test_family_detected_from_special_tokens(family, backend_detection):
    data = load(family)
    model = model_of(special_from(data, backend_detection=backend_detection))
    assert choose(model).name == data["expected_format"]


def test_repo_and_file_tokens_alone_are_not_starcoder_fim():
    # SmolLM2's vocabulary: StarCoder2's repository tokens, no <fim_*> tokens.
    model = model_of(special_from(load("smollm2"), backend_detection=False))
    assert {"<repo_name>", "<file_sep>", "<filename>"} <= set(model.special.by_text)
    for fmt in registered_formats():
        assert fmt.score(model) == (1 if fmt.name == "prefix-only" else 0), fmt.name


def test_a_family_needs_all_its_required_tokens():
    data = load("qwen2.5-coder")
    tokens = {k: v for k, v in data["tokens"].items() if k != "<|fim_middle|>"}
    model = model_of(SpecialTokens(by_text=tokens))
    assert fim.QwenCoderFormat().score(model) == 0
    assert choose(model).name == "prefix-only"


def test_starcoder2_outranks_starcoder_on_its_vocabulary():
    model = model_of(special_from(load("starcoder2"), backend_detection=False))
    assert fim.StarCoder2Format().score(model) > fim.StarCoderFormat().score(model) > 0


def test_unknown_fim_spelling_uses_the_backends_fim_ids():
    special = SpecialTokens(fim_prefix=7, fim_suffix=8, fim_middle=9, by_text={"<|code_prefix|>": 7})
    fmt = choose(model_of(special))
    assert fmt.name == "fim-generic"
    prompt = fmt.build(model_of(special), "p", "s", [], CompletionQuery(prefix="p"))
    assert prompt.tokens == [7, *char_encode("p"), 8, *char_encode("s"), 9]


@pytest.mark.model
def test_default_model_gets_the_prefix_only_format(default_model_path):
    from exlsp.runtime import BackendConfig, load_backend, resolve_model

    backend = load_backend(resolve_model(default_model_path), BackendConfig(n_lanes=1, n_ctx=512))
    encode = lambda text: backend.tokenize(text, add_bos=False, special=False)  # noqa: E731
    model = model_of(backend.special_tokens, n_ctx=512, encode=encode)
    assert choose(model).name == "prefix-only"
    assert fim.StarCoder2Format().score(model) == 0
    # User text that spells a special token stays text.
    prompt = choose(model).build(model, "x = '<file_sep>'", "", [], CompletionQuery(prefix=""))
    assert backend.special_tokens.by_text["<file_sep>"] not in prompt.tokens


# ---- token layouts --------------------------------------------------------------------------------


def expect(model: ModelInfo, *items: str | tuple[str]) -> list[int]:
    """A token list from text (str, encoded) and special tokens ((name,), looked up)."""
    out: list[int] = []
    for item in items:
        out += [model.special.by_text[item[0]]] if isinstance(item, tuple) else model.encode(item)
    return out


PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
CHUNKS = [
    ContextChunk(source="t", text="A = 1", path="lib/a.py"),
    ContextChunk(source="t", text="B = 2\n", path="b.py"),
]
QUERY = CompletionQuery(prefix=PREFIX, suffix=SUFFIX, language="python", path="main.py")


def build(family: str, context=(), **kw) -> tuple[ModelInfo, Prompt]:
    model = model_of(special_from(load(family), backend_detection=False), **kw)
    fmt = choose(model)
    return model, fmt.build(model, PREFIX, SUFFIX, list(context), QUERY)


def test_qwen_layout():
    model, prompt = build("qwen2.5-coder")
    assert prompt.tokens == expect(model, ("<|fim_prefix|>",), PREFIX, ("<|fim_suffix|>",), SUFFIX, ("<|fim_middle|>",))
    assert prompt.stop == [] and prompt.add_bos


def test_qwen_repository_layout_with_context():
    model, prompt = build("qwen2.5-coder", CHUNKS)
    assert prompt.tokens == expect(
        model,
        ("<|repo_name|>",), "project\n",
        ("<|file_sep|>",), "lib/a.py\nA = 1\n",
        ("<|file_sep|>",), "b.py\nB = 2\n",
        ("<|file_sep|>",), "main.py\n",
        ("<|fim_prefix|>",), PREFIX, ("<|fim_suffix|>",), SUFFIX, ("<|fim_middle|>",),
    )  # fmt: skip


def test_starcoder_layout_puts_context_in_comments():
    model, prompt = build("starcoder", CHUNKS)
    assert prompt.tokens == expect(
        model, "# lib/a.py\nA = 1\n\n", "# b.py\nB = 2\n\n",
        ("<fim_prefix>",), PREFIX, ("<fim_suffix>",), SUFFIX, ("<fim_middle>",),
    )  # fmt: skip


def test_starcoder2_layouts():
    model, prompt = build("starcoder2")
    assert prompt.tokens == expect(model, ("<fim_prefix>",), PREFIX, ("<fim_suffix>",), SUFFIX, ("<fim_middle>",))
    model, prompt = build("starcoder2", CHUNKS)
    assert prompt.tokens == expect(
        model,
        ("<repo_name>",), "project",
        ("<file_sep>",), "lib/a.py\nA = 1\n",
        ("<file_sep>",), "b.py\nB = 2\n",
        ("<file_sep>",), ("<fim_prefix>",), "main.py\n", PREFIX, ("<fim_suffix>",), SUFFIX, ("<fim_middle>",),
    )  # fmt: skip


def test_codellama_layout_spaces():
    # "<PRE> {prefix} <SUF>{suffix} <MID>": the ▁-spelled tokens hold the spaces before SUF and MID.
    model, prompt = build("codellama")
    assert prompt.tokens == expect(model, ("▁<PRE>",), " " + PREFIX, ("▁<SUF>",), SUFFIX, ("▁<MID>",))


def test_codellama_layout_with_plain_spelling_writes_the_spaces():
    special = SpecialTokens(bos=1, eos=2, add_bos=True, by_text={"<PRE>": 5, "<SUF>": 6, "<MID>": 7})
    model = model_of(special)
    prompt = choose(model).build(model, PREFIX, SUFFIX, [], QUERY)
    assert prompt.tokens == expect(model, ("<PRE>",), " " + PREFIX + " ", ("<SUF>",), SUFFIX + " ", ("<MID>",))


def test_codellama_removes_the_encoders_own_dummy_space():
    model = model_of(special_from(load("codellama"), backend_detection=False), encode=spm_encode)
    assert fim.adds_space_prefix(model)
    prompt = choose(model).build(model, PREFIX, SUFFIX, [], QUERY)
    by = model.special.by_text
    assert prompt.tokens == [
        by["▁<PRE>"], *char_encode(" " + PREFIX), by["▁<SUF>"], *char_encode(SUFFIX), by["▁<MID>"]
    ]  # fmt: skip


def test_dummy_space_detection():
    assert not fim.adds_space_prefix(model_of(SpecialTokens()))
    assert fim.adds_space_prefix(model_of(SpecialTokens(), encode=spm_encode))


def test_deepseek_layout():
    model, prompt = build("deepseek-coder")
    assert prompt.tokens == expect(
        model, ("<｜fim▁begin｜>",), PREFIX, ("<｜fim▁hole｜>",), SUFFIX, ("<｜fim▁end｜>",)
    )


def test_codestral_layout_is_suffix_first():
    model, prompt = build("codestral", CHUNKS[:1])
    assert prompt.tokens == expect(model, ("[SUFFIX]",), SUFFIX, ("[PREFIX]",), "# lib/a.py\nA = 1\n\n", PREFIX)


@pytest.mark.parametrize("family", ["smollm2", "llama3"])
def test_prefix_only_layout(family):
    model, prompt = build(family, CHUNKS[:1])
    assert prompt.tokens == expect(model, "# lib/a.py\nA = 1\n\n", PREFIX)
    assert prompt.stop == ["\nprint(add(1, 2))"]  # the model cannot see the suffix: stop at it


def test_prefix_only_stop_needs_a_distinctive_line():
    assert fim.suffix_stops("\n}\n") == []
    assert fim.suffix_stops(")\n\n    return total\n") == ["\n    return total"]
    assert fim.suffix_stops("") == []


def test_context_comment_style_follows_the_language():
    model = model_of(special_from(load("starcoder"), backend_detection=False))
    query = CompletionQuery(prefix="", language="typescript")
    tokens = fim.StarCoderFormat().build(model, "x", "", CHUNKS[:1], query).tokens
    assert tokens[: len(char_encode("// lib/a.py\n"))] == char_encode("// lib/a.py\n")


# ---- the context limit ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_build_never_exceeds_the_context(family):
    model = model_of(special_from(load(family), backend_detection=False), n_ctx=96)
    prefix, suffix = "".join(f"line {i}\n" for i in range(100)) + "x = ", " + 1\n" + "tail\n" * 100
    query = CompletionQuery(prefix=prefix, suffix=suffix, max_tokens=16, path="m.py")
    prompt = choose(model).build(model, prefix, suffix, CHUNKS * 5, query)
    bos = 1 if model.special.add_bos else 0
    assert 0 < len(prompt.tokens) <= 96 - 16 - bos
    text = "".join(chr(t - CHAR) for t in prompt.tokens if t >= CHAR)
    assert "A = 1" not in text  # context goes first
    assert "line 99\nx = " in text  # the prefix keeps its end, next to the cursor
    if choose(model).name != "prefix-only":
        assert " + 1\n" in text  # the suffix keeps its start


def test_fit_drops_whole_chunks_then_trims_the_far_ends():
    parts = [
        fim.Part("chunk", [1] * 5), fim.Part("fixed", [9]), fim.Part("prefix", [2, 3, 4, 5]),
        fim.Part("fixed", [8]), fim.Part("suffix", [6, 7, 6, 7]), fim.Part("fixed", [7]),
    ]  # fmt: skip
    assert fim.fit(parts, 11) == [9, 2, 3, 4, 5, 8, 6, 7, 6, 7, 7]  # dropping the chunk is enough
    assert fim.fit(parts, 7) == [9, 3, 4, 5, 8, 6, 7]  # 4 tokens of room: 3 for the prefix, 1 for the suffix


# ---- plugin surface ----------------------------------------------------------------------------------


def test_registered_formats_and_settings():
    names = [f.name for f in registered_formats()]
    assert names == [
        "qwen2.5-coder", "starcoder", "starcoder2", "codellama", "deepseek-coder", "codestral", "fim-generic",
        "prefix-only",
    ]  # fmt: skip
    settings = fim.exlsp_default_settings()
    assert settings["repo_name"] == "project" and settings["prefix_ratio"] == 0.75


def test_repo_name_setting():
    fmt = fim.QwenCoderFormat()
    fmt.configure({"repo_name": "exlsp"})
    model = model_of(special_from(load("qwen2.5-coder"), backend_detection=False))
    tokens = fmt.build(model, "p", "s", CHUNKS[:1], QUERY).tokens
    assert tokens[1 : 1 + len("exlsp\n")] == char_encode("exlsp\n")
    fmt.configure({"repo_name": "bad\nname"})  # ignored, the last good value stays
    assert fmt.repo_name == "exlsp"
