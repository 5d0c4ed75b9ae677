"""The ExLlamaV2 backend on a machine without a GPU: availability, model directory checks, and the
plain functions (special tokens, token bytes, prefill chunking, logits), plus the lane logic around
a stand-in forward pass. Runs with a real model need CUDA and live elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from exlsp.runtime.backends import exllamav2 as xb
from exlsp.runtime.backends.base import Backend, BackendConfig
from exlsp.runtime.errors import BackendUnavailable, ModelError
from exlsp.runtime.types import SpecialTokens

# --- availability --------------------------------------------------------------------------------


def _fake_torch(cuda: bool) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: cuda)
    return torch


def test_available_without_torch(monkeypatch):
    monkeypatch.setattr(xb, "_installed", lambda name: name != "torch")
    assert xb.available() == (False, "torch is not installed (install a CUDA build of torch first)")


def test_available_without_cuda_does_not_import_exllamav2(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(cuda=False))
    monkeypatch.setattr(xb, "_installed", lambda name: True)
    ok, reason = xb.available()
    assert not ok
    assert "no CUDA device" in reason
    assert "exllamav2" not in sys.modules


def test_available_without_exllamav2(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(cuda=True))
    monkeypatch.setattr(xb, "_installed", lambda name: name != "exllamav2")
    ok, reason = xb.available()
    assert not ok
    assert reason == "exllamav2 is not installed: pip install 'exlsp[gpu]'"


def test_available_without_tokenizers(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(cuda=True))
    monkeypatch.setattr(xb, "_installed", lambda name: name != "tokenizers")
    assert xb.available() == (False, "tokenizers is not installed: pip install 'exlsp[gpu]'")


def test_available_with_everything(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(cuda=True))
    monkeypatch.setattr(xb, "_installed", lambda name: True)
    assert xb.available() == (True, "")


def test_available_on_this_machine_and_load_refuses(tmp_path):
    ok, reason = xb.available()
    if ok:
        pytest.skip("this machine can run exllamav2")
    assert reason
    with pytest.raises(BackendUnavailable) as err:
        xb.ExLlamaV2Backend.load(tmp_path, BackendConfig())
    assert reason in str(err.value)
    assert "exllamav2" not in sys.modules


def test_load_checks_the_directory_before_importing_anything(monkeypatch, tmp_path):
    monkeypatch.setattr(xb, "available", lambda: (True, ""))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no tokenizer.json") as err:
        xb.ExLlamaV2Backend.load(tmp_path, BackendConfig())
    assert str(tmp_path) in str(err.value)
    assert "exllamav2" not in sys.modules


# --- model directory -----------------------------------------------------------------------------


def test_read_model_dir_missing(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelError, match="is not a directory") as err:
        xb.read_model_dir(missing)
    assert str(missing) in str(err.value)


def test_read_model_dir_without_tokenizer_json(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (tmp_path / "tokenizer.model").write_bytes(b"\0")
    with pytest.raises(ModelError, match=r"has no tokenizer\.json"):
        xb.read_model_dir(tmp_path)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_read_model_dir_broken_config(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError, match="cannot be read") as err:
        xb.read_model_dir(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value)


def test_read_model_dir_ok(tmp_path):
    (tmp_path / "config.json").write_text('{"vocab_size": 7}')
    (tmp_path / "tokenizer.json").write_text('{"added_tokens": []}')
    assert xb.read_model_dir(tmp_path) == ({"vocab_size": 7}, {"added_tokens": []})


# --- special tokens ------------------------------------------------------------------------------

QWEN = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661,
    "<|fim_pad|>": 151662, "<|repo_name|>": 151663, "<|file_sep|>": 151664,
}  # fmt: skip
STARCODER2 = {
    "<|endoftext|>": 0, "<fim_prefix>": 1, "<fim_middle>": 2, "<fim_suffix>": 3,
    "<fim_pad>": 4, "<repo_name>": 5, "<file_sep>": 6,
}  # fmt: skip
DEEPSEEK = {
    "<｜begin▁of▁sentence｜>": 32013, "<｜end▁of▁sentence｜>": 32014, "<｜fim▁hole｜>": 32015,
    "<｜fim▁begin｜>": 32016, "<｜fim▁end｜>": 32017, "<|EOT|>": 32021,
}  # fmt: skip
CODESTRAL = {"<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "[PREFIX]": 7, "[MIDDLE]": 8,
             "[SUFFIX]": 9}  # fmt: skip


def test_special_tokens_qwen_base():
    st = xb.find_special_tokens(QWEN, bos=None, eos=151643)
    assert (st.eos, st.eot) == (151643, 151645)
    assert (st.fim_prefix, st.fim_suffix, st.fim_middle) == (151659, 151661, 151660)
    assert (st.fim_pad, st.fim_repo, st.fim_sep) == (151662, 151663, 151664)
    assert st.has_fim and st.by_text == QWEN
    assert st.end_of_generation == {151643, 151645}


def test_special_tokens_qwen_instruct_ends_turns_with_endoftext_too():
    st = xb.find_special_tokens(QWEN, bos=None, eos=151645)
    assert st.eot == 151643


def test_special_tokens_starcoder2():
    st = xb.find_special_tokens(STARCODER2, bos=0, eos=0)
    assert st.eot is None  # <|endoftext|> is the EOS itself
    assert (st.fim_prefix, st.fim_suffix, st.fim_middle, st.fim_pad) == (1, 3, 2, 4)
    assert (st.fim_repo, st.fim_sep) == (5, 6)


def test_special_tokens_codellama_from_the_base_vocab():
    added = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab = {"▁<PRE>": 32007, "▁<SUF>": 32008, "▁<MID>": 32009, "▁<EOT>": 32010, "▁the": 278}
    st = xb.find_special_tokens(added, bos=1, eos=2, vocab=vocab)
    assert (st.fim_prefix, st.fim_suffix, st.fim_middle, st.eot) == (32007, 32008, 32009, 32010)
    assert st.fim_pad is None and st.fim_repo is None
    assert st.by_text["▁<PRE>"] == 32007 and "▁the" not in st.by_text


def test_special_tokens_codellama_plain_spelling():
    added = {"<PRE>": 5, "<SUF>": 6, "<MID>": 7, "<EOT>": 8, "</s>": 2}
    st = xb.find_special_tokens(added, bos=None, eos=2)
    assert (st.fim_prefix, st.fim_suffix, st.fim_middle, st.eot) == (5, 6, 7, 8)


def test_special_tokens_deepseek():
    st = xb.find_special_tokens(DEEPSEEK, bos=32013, eos=32014)
    assert (st.fim_prefix, st.fim_suffix, st.fim_middle) == (32016, 32015, 32017)
    assert (st.bos, st.eot) == (32013, 32021)


def test_special_tokens_codestral():
    st = xb.find_special_tokens(CODESTRAL, bos=1, eos=2)
    assert (st.fim_prefix, st.fim_suffix, st.fim_middle) == (7, 9, 8)
    assert st.eot is None


def test_special_tokens_llama3_without_fim():
    added = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|eot_id|>": 128009}
    st = xb.find_special_tokens(added, bos=128000, eos=128001)
    assert st.eot == 128009
    assert not st.has_fim and st.fim_prefix is None


def test_special_tokens_never_mix_families():
    added = {"<fim_prefix>": 1, "<|fim_suffix|>": 2, "<|fim_middle|>": 3, "<fim_pad>": 4}
    st = xb.find_special_tokens(added, bos=None, eos=None)
    assert not st.has_fim
    assert (st.fim_prefix, st.fim_suffix, st.fim_middle, st.fim_pad) == (None, None, None, None)


def test_added_and_base_vocab_from_tokenizer_json():
    tj = {
        "added_tokens": [{"id": 5, "content": "<x>", "special": True}],
        "model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["▁a", -1.0]]},
    }
    assert xb.added_tokens(tj) == {"<x>": 5}
    assert xb.base_vocab(tj) == {"<unk>": 0, "▁a": 1}
    assert xb.base_vocab({"model": {"vocab": {"a": 3}}}) == {"a": 3}


# --- token bytes ---------------------------------------------------------------------------------


def test_gpt2_byte_decoder_is_a_bijection():
    assert len(xb.BYTE_DECODER) == 256
    assert sorted(xb.BYTE_DECODER.values()) == list(range(256))
    assert xb.BYTE_DECODER["Ġ"] == 0x20 and xb.BYTE_DECODER["Ċ"] == 0x0A


@pytest.mark.parametrize(
    ("piece", "style", "expected"),
    [
        ("Ġhello", "byte_level", b" hello"),
        ("Ċ", "byte_level", b"\n"),
        ("ĉĉ", "byte_level", b"\t\t"),
        ("âĤ¬", "byte_level", "€".encode()),
        ("ðŁĺ", "byte_level", "😀".encode()[:3]),  # a piece may end inside a character
        ("<0x0A>", "byte_level", b"<0x0A>"),  # only SentencePiece vocabularies fall back to bytes
        ("<0x0A>", "sentencepiece", b"\n"),
        ("<0xE2>", "sentencepiece", b"\xe2"),
        ("▁hello", "sentencepiece", b" hello"),
        ("<0x0A>x", "sentencepiece", b"<0x0A>x"),
        ("a▁b", "plain", "a▁b".encode()),
    ],
)
def test_piece_bytes(piece, style, expected):
    assert xb.piece_bytes(piece, style) == expected


@pytest.mark.parametrize(
    ("tokenizer_json", "style"),
    [
        ({"decoder": {"type": "ByteLevel"}}, "byte_level"),
        ({"decoder": None, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split"}, {"type": "ByteLevel"}]}}, "byte_level"),
        ({"decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]}}, "sentencepiece"),
        ({"decoder": {"type": "Metaspace", "replacement": "▁"}}, "sentencepiece"),
        ({"decoder": None, "model": {"type": "BPE", "byte_fallback": True}}, "sentencepiece"),
        ({"decoder": {"type": "WordPiece"}, "model": {"type": "WordPiece"}}, "plain"),
    ],
)  # fmt: skip
def test_piece_style(tokenizer_json, style):
    assert xb.piece_style(tokenizer_json) == style


def test_piece_table_prefers_added_token_text():
    tj = {
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": {"a": 0, "Ġb": 1, "<|x|>": 2}},
        "added_tokens": [{"id": 2, "content": "<|x|>", "special": True},
                         {"id": 3, "content": "<｜fim▁hole｜>", "special": True}],
    }  # fmt: skip
    table = xb.piece_table(tj, 6, extra={4: "<extra>", 0: "ignored"})
    assert table == [b"a", b" b", b"<|x|>", "<｜fim▁hole｜>".encode(), b"<extra>", b""]


def _tokenizers():
    return pytest.importorskip("tokenizers")


def test_token_bytes_join_to_decode_byte_level_bpe():
    tk = _tokenizers()
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<|endoftext|>", "<|fim_prefix|>"],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    corpus = ["def f(x):\n\treturn x  # é€😀 ünïcödé\n", "print('hello world')\r\n"] * 30
    tok.train_from_iterator(corpus, trainer)
    table = xb.piece_table(json.loads(tok.to_str()), tok.get_vocab_size())
    text = "def g(y):\n\treturn 'ünï€😀' <|endoftext|>\r\n  中文"
    ids = tok.encode(text, add_special_tokens=False).ids
    joined = b"".join(table[i] for i in ids)
    assert joined.decode("utf-8") == tok.decode(ids, skip_special_tokens=False) == text
    assert any(len(table[i]) == 1 and table[i][0] >= 0x80 for i in ids)  # split characters


def test_token_bytes_join_to_decode_sentencepiece_byte_fallback():
    tk = _tokenizers()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab |= {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for piece in ("▁", "h", "e", "l", "o", "x", "▁h", "▁he", "ll", "▁hell", "▁hello"):
        vocab[piece] = len(vocab)
    merges = [("▁", "h"), ("▁h", "e"), ("l", "l"), ("▁he", "ll"), ("▁hell", "o")]
    tok = tk.Tokenizer(tk.models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = tk.normalizers.Sequence(
        [tk.normalizers.Prepend("▁"), tk.normalizers.Replace(" ", "▁")]
    )
    tok.decoder = tk.decoders.Sequence([
        tk.decoders.Replace("▁", " "), tk.decoders.ByteFallback(), tk.decoders.Fuse(),
        tk.decoders.Strip(" ", 1, 0),
    ])  # fmt: skip
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tj = json.loads(tok.to_str())
    assert xb.piece_style(tj) == "sentencepiece"
    table = xb.piece_table(tj, tok.get_vocab_size())
    text = "hello\n€ hello x"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.id_to_token(ids[0]) == "▁hello" and "<0x0A>" in tok.encode(text).tokens
    decoded = tok.decode(ids)
    assert decoded == text
    # the decoder strips the space of the text's first "▁"; a single token cannot know it is first
    assert b"".join(table[i] for i in ids) == b" " + text.encode()


# --- stdout -------------------------------------------------------------------------------------


STDOUT_SCRIPT = """
import ctypes, os, sys
from exlsp.runtime.backends.exllamav2 import stdout_to_stderr
libc = ctypes.CDLL(None)
print("before", flush=True)
with stdout_to_stderr():
    print("python print")
    sys.stdout.write("sys.stdout write\\n")
    os.write(1, b"fd write\\n")
    libc.printf(b"c printf\\n")  # held in C stdio's buffer: stdout is a pipe
    os.system("echo child process")
print("after", flush=True)
"""


def test_stdout_to_stderr_moves_every_kind_of_stdout_write():
    # PYTHONUNBUFFERED would make C stdio unbuffered too and hide a missing fflush.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(
        [sys.executable, "-c", STDOUT_SCRIPT], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"before\nafter\n"
    for text in (b"python print", b"sys.stdout write", b"fd write", b"c printf", b"child process"):
        assert text in proc.stderr


def test_stdout_to_stderr_restores_stdout_after_an_error(capfd):
    with pytest.raises(RuntimeError), xb.stdout_to_stderr():
        raise RuntimeError("boom")
    os.write(1, b"back\n")
    assert capfd.readouterr().out == "back\n"


# --- chunking and logits -------------------------------------------------------------------------


def test_batches():
    assert list(xb.batches(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(xb.batches(4, 4)) == [(0, 4)]
    assert list(xb.batches(0, 4)) == []
    assert list(xb.batches(2, 0)) == [(0, 1), (1, 2)]


def test_prefill_feeds_chunks_and_marks_only_the_last():
    calls = []
    n = xb.prefill(lambda chunk, last: calls.append((list(chunk), last)), list(range(10)), 4,
                   lambda: False)  # fmt: skip
    assert n == 10
    assert calls == [([0, 1, 2, 3], False), ([4, 5, 6, 7], False), ([8, 9], True)]


def test_prefill_stops_between_chunks_on_abort():
    calls = []
    n = xb.prefill(lambda chunk, last: calls.append(list(chunk)), list(range(10)), 4,
                   lambda: len(calls) == 2)  # fmt: skip
    assert n == 8
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert xb.prefill(lambda c, last: calls.append(c), [1, 2], 4, lambda: True) == 0


def test_fit_logits_cuts_head_padding():
    row = np.arange(40, dtype=np.float16).reshape(1, 1, 40)
    out = xb.fit_logits(row, 35)
    assert out.dtype == np.float32 and out.shape == (35,)
    assert out[-1] == 34 and out.flags.c_contiguous


def test_fit_logits_pads_a_narrow_head():
    out = xb.fit_logits(np.ones(3, dtype=np.float16), 5)
    assert out.tolist()[:3] == [1.0, 1.0, 1.0]
    assert np.isneginf(out[3:]).all()


# --- lanes around a stand-in forward pass --------------------------------------------------------


class FakeCache:
    def __init__(self) -> None:
        self.current_seq_len = 0


class FakeForwardBackend(xb.ExLlamaV2Backend):
    """Everything real except the model call: each forward advances the cache like exllamav2's,
    and the logits favour the last fed token."""

    def __init__(self, n_lanes: int = 2, n_ctx: int = 32, n_batch: int = 4) -> None:
        super().__init__(
            model_name="fake", model=None, caches=[FakeCache() for _ in range(n_lanes)],
            tokenizer=None, plain_tokenizer=None, pieces=[bytes([65 + i]) for i in range(20)],
            special_tokens=SpecialTokens(bos=0, eos=1), n_ctx=n_ctx, n_batch=n_batch,
        )  # fmt: skip
        self.calls: list[tuple[int, list[int], bool]] = []

    def _forward(self, lane, chunk, last):
        self.calls.append((lane, list(chunk), last))
        self._caches[lane].current_seq_len += len(chunk)
        if last:
            row = np.zeros((1, 1, 24), dtype=np.float16)
            row[0, 0, chunk[-1]] = 1
            return row[0, -1]
        return None


def test_backend_satisfies_the_protocol():
    backend = FakeForwardBackend()
    assert isinstance(backend, Backend)
    assert (backend.name, backend.n_lanes, backend.vocab_size) == ("exllamav2", 2, 20)


def test_eval_chunks_advance_the_lane_and_keep_last_logits():
    backend = FakeForwardBackend()
    assert backend.eval(1, [3, 4, 5, 6, 7, 8], 0, lambda: False) == 6
    assert [c[1:] for c in backend.calls] == [([3, 4, 5, 6], False), ([7, 8], True)]
    assert backend._caches[1].current_seq_len == 6 and backend._caches[0].current_seq_len == 0
    logits = backend.logits(1)
    assert logits.shape == (20,) and int(np.argmax(logits)) == 8
    assert backend.eval(1, [9], 6, lambda: False) == 1
    assert int(np.argmax(backend.logits(1))) == 9


def test_eval_at_an_earlier_start_drops_the_tail_first():
    backend = FakeForwardBackend()
    backend.eval(0, [1, 2, 3, 4, 5], 0, lambda: False)
    backend.eval(0, [6, 7], 3, lambda: False)
    assert backend._caches[0].current_seq_len == 5
    assert int(np.argmax(backend.logits(0))) == 7


def test_eval_refuses_positions_the_lane_does_not_hold():
    backend = FakeForwardBackend()
    with pytest.raises(ValueError, match="holds 0 tokens"):
        backend.eval(0, [1], 2, lambda: False)
    with pytest.raises(ValueError, match="exceed n_ctx"):
        backend.eval(0, list(range(33)), 0, lambda: False)
    assert backend.calls == []


def test_aborted_eval_leaves_no_stale_logits():
    backend = FakeForwardBackend()
    backend.eval(0, [1, 2], 0, lambda: False)
    fed = backend.eval(0, list(range(10)), 2, lambda: len(backend.calls) == 2)
    assert fed == 4 and backend._caches[0].current_seq_len == 6
    with pytest.raises(RuntimeError, match="no logits"):
        backend.logits(0)


def test_truncate():
    backend = FakeForwardBackend()
    backend.eval(0, [1, 2, 3], 0, lambda: False)
    backend.truncate(0, 10)  # longer than the lane: nothing to forget
    assert backend._caches[0].current_seq_len == 3
    assert int(np.argmax(backend.logits(0))) == 3
    backend.truncate(0, 1)
    assert backend._caches[0].current_seq_len == 1
    with pytest.raises(RuntimeError):
        backend.logits(0)


def test_token_bytes_out_of_range_is_empty():
    backend = FakeForwardBackend()
    assert backend.token_bytes(2) == b"C"
    assert backend.token_bytes(20) == b"" and backend.token_bytes(-1) == b""


def test_tokenize_without_special_parsing_uses_the_plain_tokenizer():
    backend = FakeForwardBackend()
    seen = []

    class Plain:
        def encode(self, text, add_special_tokens):
            seen.append((text, add_special_tokens))
            return types.SimpleNamespace(ids=[5, 6])

    backend._plain_tokenizer = Plain()
    assert backend.tokenize("<|endoftext|>", add_bos=True, special=False) == [0, 5, 6]
    assert backend.tokenize("x", add_bos=False, special=False) == [5, 6]
    assert seen == [("<|endoftext|>", False), ("x", False)]


def test_plain_tokenizer_setting_keeps_special_text_as_text():
    """Why tokenize(special=False) cannot use exllamav2's encode: the HF tokenizer matches special
    tokens in any text unless ``encode_special_tokens`` is set."""
    tk = _tokenizers()
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tk.trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(["a b c"], trainer)
    assert tok.encode("a<|endoftext|>", add_special_tokens=False).ids[-1] == 0
    tok.encode_special_tokens = True
    assert 0 not in tok.encode("a<|endoftext|>", add_special_tokens=False).ids


def test_real_forward_call_shapes_with_cpu_torch():
    torch = pytest.importorskip("torch")

    class Model:
        def __init__(self):
            self.calls = []

        def forward(self, ids, cache, **kwargs):
            self.calls.append((ids.dtype, tuple(ids.shape), ids.device.type, kwargs))
            cache.current_seq_len += ids.shape[1]
            if kwargs.get("preprocess_only"):
                return None
            out = torch.zeros((1, 1, 24), dtype=torch.float16)
            out[0, 0, int(ids[0, -1])] = 1
            return out

    model = Model()
    backend = xb.ExLlamaV2Backend(
        model_name="m", model=model, caches=[FakeCache()], tokenizer=None, plain_tokenizer=None,
        pieces=[b"x"] * 20, special_tokens=SpecialTokens(), n_ctx=64, n_batch=3, torch=torch,
    )  # fmt: skip
    assert backend.eval(0, [1, 2, 3, 4, 5], 0, lambda: False) == 5
    assert model.calls == [
        (torch.long, (1, 3), "cpu", {"preprocess_only": True}),
        (torch.long, (1, 2), "cpu", {"last_id_only": True}),
    ]
    logits = backend.logits(0)
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32 and logits.shape == (20,)
    assert int(np.argmax(logits)) == 5
