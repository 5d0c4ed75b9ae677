"""Completion context: the ring of other buffers' chunks, and the cache-stable prompt layout.

The layout's promise is measured here: typing into a real source file, each prompt shares most of
its tokens with the previous one (so the engine's KV cache covers them), with context present.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from exlsp.plugins.api import ChatQuery, CompletionQuery, ContextChunk, ModelInfo
from exlsp.plugins.builtin import context, fim
from exlsp.plugins.builtin.context import ContextRing, RecentBuffersProvider, jaccard
from exlsp.plugins.builtin.layout import PromptLayout, completion_budget
from exlsp.runtime import SpecialTokens

ROOT = Path(__file__).resolve().parents[1]
ENGINE = (ROOT / "runtime" / "engine.py").read_text(encoding="utf-8")
TOKEN = re.compile(r"\w+|[^\w\s]|\n|[ \t]+")


def proxy_tokens(text: str) -> list[str]:
    """A tokenizer-free stand-in: words, punctuation, newlines, runs of blanks."""
    return TOKEN.findall(text)


def proxy_count(text: str) -> int:
    return len(proxy_tokens(text))


def numbered(n: int, width: int = 3) -> str:
    return "".join(f"line {i} " + "x " * width + "\n" for i in range(n))


def chunk(name: str, lines: int = 10) -> ContextChunk:
    return ContextChunk(source="t", path=name, text="".join(f"{name} {i} = {i}\n" for i in range(lines)))


# ---- the ring -----------------------------------------------------------------------------------


def test_ring_picks_snapped_chunks_around_the_cursor():
    ring = ContextRing(capacity=4, chunk_lines=8)
    text = "\n".join(f"l{i}" for i in range(100))
    assert ring.pick_chunk(text, None).split("\n") == [f"l{i}" for i in range(8)]
    assert ring.pick_chunk(text, 50).split("\n") == [f"l{i}" for i in range(46, 54)]
    # Nearby cursors give the same chunk: typing edits a chunk rather than sliding it.
    assert ring.pick_chunk(text, 51) == ring.pick_chunk(text, 50)
    assert ring.pick_chunk(text, 99).split("\n")[-1] == "l99"


def test_ring_dedups_replaces_and_evicts():
    ring = ContextRing(capacity=3, chunk_lines=32)
    a = "\n".join(f"a{i} = {i}" for i in range(30))
    assert ring.add("a.py", a)
    assert not ring.add("a.py", a)  # identical: nothing changes
    assert ring.add("b.py", "\n".join(f"b{i}" for i in range(30)))
    edited = a.replace("a3 = 3", "a3 = 33")  # 1 line of 30 differs: Jaccard 29/31 > 0.9
    assert jaccard(frozenset(a.split("\n")), frozenset(edited.split("\n"))) > 0.9
    assert ring.add("a.py", edited)
    assert [c.path for c in ring.chunks()] == ["b.py", "a.py"]  # the newer text, now the newest
    assert "a3 = 33" in ring.chunks()[-1].text
    for name in ("c.py", "d.py"):
        ring.add(name, "\n".join(f"{name}{i}" for i in range(30)))
    assert [c.path for c in ring.chunks()] == ["a.py", "c.py", "d.py"]  # the oldest went


def test_ring_ignores_blank_text_and_excludes_the_current_file():
    ring = ContextRing()
    assert not ring.add("empty.py", "\n  \n\t\n")
    ring.add("file:///home/u/src/a%20b.py", "x = 1")
    ring.add("/home/u/src/c.py", "y = 2")
    assert [c.path for c in ring.chunks()] == ["/home/u/src/a b.py", "/home/u/src/c.py"]
    assert [c.path for c in ring.chunks(exclude="/home/u/src/a b.py")] == ["/home/u/src/c.py"]
    assert [c.path for c in ring.chunks(exclude="file:///home/u/src/c.py")] == ["/home/u/src/a b.py"]
    assert all(c.source == "recent_buffers" and c.stable for c in ring.chunks())


def test_ring_configure_keeps_good_values_only():
    ring = ContextRing()
    for i in range(5):
        ring.add(f"{i}.py", f"v{i} = {i}")
    ring.configure({"ring_size": 2, "chunk_lines": "many", "similarity": 2.0})
    assert len(ring) == 2 and ring.chunk_lines == 32 and ring.similarity == 0.9
    ring.configure({"ring_size": 0})
    assert ring.chunks() == []


def test_provider_reads_open_documents_and_the_ring():
    ring = ContextRing()
    provider = RecentBuffersProvider(ring)
    ring.add("seen.py", "s = 1", cursor_line=0)
    query = CompletionQuery(
        prefix="x", path="main.py", open_documents={"main.py": "x", "other.py": "o = 1", "seen.py": "changed = 2"}
    )
    chunks = provider.provide(query, None)  # type: ignore[arg-type]
    assert [(c.path, c.text) for c in chunks] == [("seen.py", "s = 1"), ("other.py", "o = 1")]
    assert provider.provide(ChatQuery(messages=[]), None) == []  # type: ignore[arg-type]
    assert provider.kinds == frozenset({"completion"}) and provider.timeout_s > 0
    provider.configure({"timeout_s": 0.2})
    assert provider.timeout_s == 0.2


def test_plugin_registers_the_module_ring_provider():
    got: list = []
    context.exlsp_register_context_providers(got.append)
    assert got == [context.PROVIDER] and context.PROVIDER.ring is context.RING
    assert context.exlsp_default_settings() == context.DEFAULTS


# ---- the layout: budget and shape ---------------------------------------------------------------------


def test_window_respects_the_budget_exactly():
    layout = PromptLayout(proxy_count)
    chunks = [chunk("a"), chunk("b", 40), chunk("c")]
    for cursor in range(0, len(ENGINE), 997):
        w = layout.window("doc", ENGINE[:cursor], ENGINE[cursor:], chunks, 700)
        assert w.tokens <= 700
        assert w.prefix_tokens == proxy_count(w.prefix) and w.suffix_tokens == proxy_count(w.suffix)
        assert ENGINE[:cursor].endswith(w.prefix) and ENGINE[cursor:].startswith(w.suffix)
        assert w.context_tokens == sum(c.tokens for c in w.chunks)


def test_prefix_suffix_ratio_is_three_to_one():
    layout = PromptLayout(proxy_count)
    prefix, suffix = numbered(400), numbered(400)
    w = layout.window("doc", prefix, suffix, [], 800)
    assert 800 * 0.25 - 10 <= w.suffix_tokens <= 800 * 0.25
    assert w.prefix_tokens <= 800 - w.suffix_tokens
    # Without a suffix (prefix-only formats) the prefix may use the whole window.
    w = PromptLayout(proxy_count).window("doc", prefix, "", [], 800)
    assert w.suffix == "" and w.prefix_tokens > 800 * 0.5


def test_prefix_window_starts_on_snapped_lines_and_moves_in_big_steps():
    layout = PromptLayout(proxy_count, snap_lines=16)
    text = numbered(600)  # 11 proxy tokens a line: 2000 tokens hold 181 lines
    offsets = [m.end() for m in re.finditer("\n", text)]
    starts = []
    for end in offsets:  # the cursor walks down the file line by line
        prefix = text[:end]
        w = layout.window("doc", prefix, "", [], 2000)
        first = prefix[: len(prefix) - len(w.prefix)].count("\n")
        assert first % 16 == 0
        starts.append(first)
    moves = [b - a for a, b in zip(starts, starts[1:]) if b != a]
    # After a move a quarter of the window (45 lines) is free: the next move is that far away.
    assert moves and all(m >= 45 for m in moves), moves
    assert len(moves) <= (600 - 181) / 45 + 1, moves


def test_cursor_jumping_back_resets_the_window():
    layout = PromptLayout(proxy_count)
    text = numbered(500)
    layout.window("doc", text, "", [], 300)
    w = layout.window("doc", text[:200], "", [], 300)
    assert w.prefix == text[:200] and w.prefix_moved


def test_each_document_keeps_its_own_window():
    layout = PromptLayout(proxy_count)
    a, b = numbered(300), numbered(300, width=5)
    wa = layout.window("a", a, "", [], 300)
    wb = layout.window("b", b, "", [], 300)
    assert layout.window("a", a + "y", "", [], 300).prefix == wa.prefix + "y"
    assert layout.window("b", b + "z", "", [], 300).prefix == wb.prefix + "z"
    layout.forget("a")
    assert layout.window("a", a + "y", "", [], 300).prefix_moved


def test_huge_lines_still_fit():
    layout = PromptLayout(proxy_count)
    line = "x = [" + ", ".join(str(i) for i in range(5000))
    w = layout.window("doc", line, ", 1]" * 3000, [], 200)
    assert w.tokens <= 200 and line.endswith(w.prefix) and w.prefix and w.suffix


def test_settings_and_budget_helper():
    layout = PromptLayout(proxy_count)
    layout.configure({"prefix_ratio": 0.5, "snap_lines": "x", "headroom": 7})
    assert layout.settings["prefix_ratio"] == 0.5 and layout.settings["snap_lines"] == 16
    assert layout.settings["headroom"] == 0.25
    model = ModelInfo("m", SpecialTokens(bos=1, add_bos=True), None, 2048, proxy_count, proxy_tokens)  # type: ignore
    assert completion_budget(model, 64) == 2048 - 64 - 16 - 1
    with pytest.raises(ValueError):
        PromptLayout().window("doc", "", "", [], 10)


# ---- the layout: extra context ---------------------------------------------------------------------


def test_context_goes_first_in_ring_order_volatile_last():
    layout = PromptLayout(proxy_count)
    volatile = ContextChunk(source="t", path="v", text="v = 1\n", stable=False)
    w = layout.window("doc", "x", "", [chunk("a"), volatile, chunk("b")], 1000)
    assert [c.path for c in w.chunks] == ["a", "b", "v"]


def test_new_chunks_wait_for_a_batch_or_a_window_move():
    layout = PromptLayout(proxy_count)
    prefix, chunks = numbered(40), [chunk("a"), chunk("b")]
    first = layout.window("doc", prefix, "", chunks, 1000)
    assert [c.path for c in first.chunks] == ["a", "b"]
    # One small new chunk: the prompt stays as it was (its cache with it).
    w = layout.window("doc", prefix + "y", "", [*chunks, chunk("c", 2)], 1000)
    assert [c.path for c in w.chunks] == ["a", "b"] and not w.context_changed
    # Enough new material (a quarter of the context budget): taken in one go.
    w = layout.window("doc", prefix + "yy", "", [*chunks, chunk("c", 2), chunk("d", 30)], 1000)
    assert [c.path for c in w.chunks] == ["a", "b", "c", "d"] and w.context_changed


def test_over_budget_context_is_evicted_in_one_batch():
    layout = PromptLayout(proxy_count)  # context budget 500; a 5-line chunk costs 45 tokens
    ring = [chunk(f"c{i}", 5) for i in range(8)]
    w = layout.window("doc", "x", "", ring, 1000)
    assert [c.path for c in w.chunks] == [f"c{i}" for i in range(8)] and w.context_tokens == 360
    changes = evictions = 0
    for i in range(8, 40):  # the ring keeps growing, a chunk per keystroke
        ring.append(chunk(f"c{i}", 5))
        before = {c.path for c in w.chunks}
        w = layout.window("doc", "x" * (i % 3 + 1), "", ring[-16:], 1000)
        assert w.context_tokens <= 500
        changes += w.context_changed
        if before - {c.path for c in w.chunks}:
            evictions += 1
            assert w.context_tokens <= 500 * 0.75  # a quarter freed at once
    # New chunks come in batches of a quarter of the budget (3 here), not one per keystroke.
    assert changes <= 32 / 3 + 1 and evictions <= changes, (changes, evictions)


# ---- reuse while typing ---------------------------------------------------------------------------------


def shared_fraction(prev: list, cur: list) -> float:
    n = 0
    for a, b in zip(prev, cur):
        if a != b:
            break
        n += 1
    return n / len(cur)


def typing_reuse(model: ModelInfo, family: str, *, chars: int = 50, budget: int = 1536) -> tuple[float, float]:
    """Type ``chars`` characters into the middle of engine.py, with other files' chunks in the
    ring; per prompt the fraction of its tokens shared with the previous prompt, and the same
    fraction counted on the tokens before the suffix. Returns their means."""
    fmt = fim.FORMATS[[f.name for f in fim.FORMATS].index(family)]
    assert fmt.score(model) > 0
    lines = ENGINE.splitlines(keepends=True)
    start = sum(len(x) for x in lines[: len(lines) // 2])
    while ENGINE[start] in " \t":
        start += 1
    ring = ContextRing()
    for path, line in (("runtime/lanes.py", 30), ("runtime/tokenizer.py", None), ("plugins/api.py", 120)):
        ring.add(path, (ROOT / path).read_text(encoding="utf-8"), line)
    layout = PromptLayout()
    prev: list[int] | None = None
    total, before_suffix = [], []
    for i in range(1, chars + 1):
        prefix, suffix = ENGINE[: start + i], ENGINE[start + chars :]
        if family == "prefix-only":
            suffix = ""
        query = CompletionQuery(prefix=prefix, suffix=suffix, language="python", path="runtime/engine.py")
        w = layout.window(query.path, prefix, suffix, ring.chunks(exclude=query.path), budget, model)
        assert w.chunks, "the measurement needs context chunks in the prompt"
        tokens = fmt.build(model, w.prefix, w.suffix, w.chunks, query).tokens
        if prev is not None:
            total.append(shared_fraction(prev, tokens))
            head = len(tokens) - (len(model.encode(w.suffix)) + 1 if family not in ("prefix-only", "codestral") else 0)
            before_suffix.append(min(1.0, total[-1] * len(tokens) / head))
        prev = tokens
    return statistics.fmean(total), statistics.fmean(before_suffix)


FIM_FAMILY = {"qwen2.5-coder": "qwen2.5-coder.json", "codestral": "codestral.json"}


def with_vocab(model: ModelInfo, family: str) -> ModelInfo:
    data = json.loads((ROOT / "tests" / "data" / "fim_tokens" / FIM_FAMILY[family]).read_text(encoding="utf-8"))
    return ModelInfo(model.name, SpecialTokens(by_text=data["tokens"]), None, 4096, model.count_tokens, model.encode)


def proxy_model() -> ModelInfo:
    ids: dict[str, int] = {}
    encode = lambda text: [ids.setdefault(t, len(ids) + 1000) for t in proxy_tokens(text)]  # noqa: E731
    return ModelInfo("proxy", SpecialTokens(), None, 4096, proxy_count, encode)


def test_typing_reuse_with_a_proxy_tokenizer():
    model = proxy_model()
    assert typing_reuse(model, "prefix-only")[0] >= 0.95
    assert typing_reuse(with_vocab(model, "codestral"), "codestral")[0] >= 0.95
    # Prefix, then suffix: the suffix (a quarter of the local window) is evaluated again every
    # time; all that comes before it is shared.
    total, head = typing_reuse(with_vocab(model, "qwen2.5-coder"), "qwen2.5-coder")
    assert head >= 0.98 and total >= 0.75


@pytest.mark.model
def test_typing_reuse_with_the_default_models_tokenizer(default_model_path, capsys):
    from exlsp.runtime import BackendConfig, load_backend, resolve_model

    backend = load_backend(resolve_model(default_model_path), BackendConfig(n_lanes=1, n_ctx=512))
    encode = lambda text: backend.tokenize(text, add_bos=False, special=False)  # noqa: E731
    model = ModelInfo("smollm2", backend.special_tokens, None, 4096, lambda t: len(encode(t)), encode)
    assert fim.PrefixOnlyFormat().score(model) == 1 and fim.QwenCoderFormat().score(model) == 0
    own, _ = typing_reuse(model, "prefix-only")
    spm, _ = typing_reuse(with_vocab(model, "codestral"), "codestral")
    psm, psm_head = typing_reuse(with_vocab(model, "qwen2.5-coder"), "qwen2.5-coder")
    with capsys.disabled():
        print(f"\nshared with the previous prompt: prefix-only {own:.4f}, suffix-first {spm:.4f}, "
              f"prefix-suffix-middle {psm:.4f} (before the suffix: {psm_head:.4f})")  # fmt: skip
    assert own >= 0.9 and spm >= 0.9
    assert psm_head >= 0.95 and psm >= 0.75
