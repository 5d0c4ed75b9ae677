"""`exlsp bench gpu` without a GPU: the bandwidth arithmetic, the plan and its JSON with a fake
measurer (budget, skips, partial files), the front-door latency stages on the test double
backend, and the one-line refusal without CUDA."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from exlsp.runtime import BackendConfig, Engine, bench_gpu as bg
from exlsp.runtime.backends.fake import FakeBackend
from exlsp.runtime.testmodels import LLAMA3_8B, QWEN25_CODER_1_5B, ModelShape

TINY = ModelShape("llama", layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=300)


# ---- arithmetic ------------------------------------------------------------------------------------


def test_weight_bytes_per_token_reads_one_embedding_row():
    # embed 300*64, per layer: 2 norms 64 + q 64*64 + k,v 32*64 each + o 64*64 + mlp 3*128*64,
    # final norm 64, head 300*64
    layer = 2 * 64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 128 * 64
    params = 300 * 64 + 2 * layer + 64 + 300 * 64
    assert TINY.n_params() == params
    assert bg.weight_bytes(TINY) == 2 * params
    assert bg.weight_bytes_per_token(TINY) == 2 * (params - 300 * 64 + 64)


def test_real_shapes_have_their_published_sizes():
    assert round(LLAMA3_8B.n_params() / 1e9, 2) == 8.03
    # Qwen2.5-Coder-1.5B ties its embeddings (1.54B); here the head is a matrix of its own, as
    # exllamav2 holds it anyway: same bytes per decoded token.
    assert round((QWEN25_CODER_1_5B.n_params() - 151936 * 1536) / 1e9, 2) == 1.54


def test_bandwidth_limit_matches_the_published_arithmetic():
    # ANCHORS: a 7B model in FP16 on an H100 (3.35 TB/s) -> 239 tok/s at most, batch 1.
    assert round(bg.bandwidth_limit_tok_s(7e9 * 2, 3.35e12)) == 239
    assert round(bg.bandwidth_limit_tok_s(7e9 * 2, 4.8e12)) == 343
    # A 1 GiB copy in 1 ms moved 2 GiB (read + written).
    assert bg.copy_bandwidth(1 << 30, 0.001) == pytest.approx(2 * (1 << 30) / 0.001)


def test_spec_bandwidth_by_device_name():
    assert bg.spec_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert bg.spec_bandwidth("NVIDIA H100 PCIe") == 2.0e12
    assert bg.spec_bandwidth("NVIDIA H200") == 4.8e12
    assert bg.spec_bandwidth("Some Future GPU") is None


def test_ratios_use_what_was_measured():
    entry = {"bandwidth_limit_tok_s": 200.0, "bare": {"decode_tok_s": 150.0, "prefill_tok_s": 8000.0},
             "engine": {"decode_tok_s": 120.0}, "socket": {"request_p50_ms": 110.0, "engine_p50_ms": 100.0}}
    assert bg.ratios(entry) == {"bare_decode_vs_limit": 0.75, "engine_decode_vs_limit": 0.6,
                                "engine_vs_bare_decode": 0.8, "socket_vs_engine_latency": 1.1}


# ---- the plan with a fake GPU -----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeMeasurer:
    def __init__(self, clock: FakeClock, out: Path, *, seconds_per_gb: float = 10.0, fail: str | None = None,
                 memory_gb: float = 80.0) -> None:  # fmt: skip
        self.clock, self.out, self.seconds_per_gb, self.fail, self.memory_gb = clock, out, seconds_per_gb, fail, memory_gb
        self.seen_on_disk: list[dict] = []
        self.measured: list[str] = []

    def gpu_info(self):
        return {"name": "NVIDIA H100 80GB HBM3", "memory_total_gb": self.memory_gb, "driver": "999.1"}

    def prepare(self):
        if self.fail == "import":
            raise ImportError("exllamav2_ext: undefined symbol")
        return {"exllamav2_import_s": 4.2}

    def copy_bandwidth(self):
        return {"bytes": 1 << 30, "bytes_per_s": 3.0e12, "gb_s": 3000.0}

    def model(self, shape, entry, save):
        self.measured.append(shape.arch)
        entry["load_s"] = 1.0
        save()
        self.seen_on_disk.append(json.loads(self.out.read_text()))  # the file follows every stage
        if self.fail == shape.arch:
            raise RuntimeError("CUDA out of memory")
        if self.fail == "interrupt":
            raise KeyboardInterrupt
        entry["bare"] = {"decode_tok_s": 180.0, "prefill_tok_s": 9000.0}
        entry["engine"] = {"decode_tok_s": 150.0, "prefill_tok_s": 6000.0}
        self.clock.now += self.seconds_per_gb * bg.weight_bytes(shape) / 1e9


def plan(tmp_path, **kw):
    clock = FakeClock()
    out = tmp_path / "gpu-bench.json"
    measurer = FakeMeasurer(clock, out, **kw)
    shapes = [("qwen2.5-coder-1.5b", QWEN25_CODER_1_5B), ("llama-3-8b", LLAMA3_8B)]
    result = bg.run_bench(shapes, measurer, bg.Budget(215, clock), out, {"reps": 3})
    return result, json.loads(out.read_text()), measurer


def test_plan_measures_both_models_and_writes_the_json(tmp_path):
    result, on_disk, measurer = plan(tmp_path, seconds_per_gb=5.0)
    assert on_disk == result and result["status"] == "complete"
    assert measurer.measured == ["qwen2", "llama"]
    assert result["gpu"]["name"] == "NVIDIA H100 80GB HBM3" and result["copy_bandwidth"]["gb_s"] == 3000.0
    assert result["gpu"]["exllamav2_import_s"] == 4.2
    qwen = result["models"]["qwen2.5-coder-1.5b"]
    assert qwen["weight_bytes"] == bg.weight_bytes(QWEN25_CODER_1_5B)
    assert qwen["bandwidth_limit_tok_s"] == round(3.0e12 / bg.weight_bytes_per_token(QWEN25_CODER_1_5B), 1)
    assert qwen["ratios"]["engine_vs_bare_decode"] == round(150 / 180, 4)
    assert qwen["shape"]["hidden"] == 1536 and qwen["stage_s"] > 0
    # Written while the first model was still being measured: a timeout keeps that much.
    early = measurer.seen_on_disk[0]
    assert early["status"] == "running" and early["models"]["qwen2.5-coder-1.5b"]["load_s"] == 1.0


def test_plan_skips_a_model_that_would_not_fit_the_budget(tmp_path):
    result, _, measurer = plan(tmp_path, seconds_per_gb=20.0)  # 1.5B: ~71 s; 8B would need ~320 s
    assert measurer.measured == ["qwen2"]
    assert "needs ~" in result["models"]["llama-3-8b"]["skipped"]
    assert result["status"] == "complete"


def test_plan_skips_a_model_larger_than_the_card(tmp_path):
    result, _, measurer = plan(tmp_path, seconds_per_gb=1.0, memory_gb=12.0)
    assert measurer.measured == ["qwen2"]
    assert "do not fit" in result["models"]["llama-3-8b"]["skipped"]


def test_exllamav2_failing_to_load_ends_the_run_with_its_reason(tmp_path):
    result, on_disk, measurer = plan(tmp_path, fail="import")
    assert measurer.measured == [] and on_disk == result
    assert result["status"] == "failed" and result["error"] == "ImportError: exllamav2_ext: undefined symbol"


def test_an_interrupted_run_leaves_its_json_marked(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        plan(tmp_path, fail="interrupt")
    on_disk = json.loads((tmp_path / "gpu-bench.json").read_text())
    assert on_disk["status"] == "interrupted"
    assert on_disk["models"]["qwen2.5-coder-1.5b"]["load_s"] == 1.0


def test_a_failing_model_is_recorded_and_the_next_still_runs(tmp_path):
    result, _, measurer = plan(tmp_path, seconds_per_gb=1.0, fail="qwen2")
    assert measurer.measured == ["qwen2", "llama"]
    assert result["models"]["qwen2.5-coder-1.5b"]["error"] == "RuntimeError: CUDA out of memory"
    assert result["models"]["llama-3-8b"]["engine"]["decode_tok_s"] == 150.0


# ---- front doors on the test double -----------------------------------------------------------------


@pytest.fixture
def fake_engine():
    engine = Engine(FakeBackend(BackendConfig(n_lanes=2, n_ctx=2048)), lane_groups={"completion": 1, "chat": 1})
    yield engine
    engine.close()


async def test_socket_latency_stage(fake_engine):
    got = await bg._socket_latency(fake_engine, 3)
    assert got["requests"] == 3 and got["request_p50_ms"] >= got["engine_p50_ms"] > 0
    assert got["overhead_p50_ms"] >= 0 and got["generated_tokens_p50"] >= 1


async def test_lsp_latency_stage(fake_engine):
    got = await bg._lsp_latency(fake_engine, 3)
    assert got["requests"] == 3 and got["request_p50_ms"] >= got["engine_p50_ms"] > 0


def test_the_exlsp_stages_of_the_gpu_measurer(tmp_path):
    """Engine decode/prefill and both front doors, as the GPU run does them, on the test double."""
    args = parse(["gpu", "--prompt-tokens", "64", "--decode-tokens", "8", "--reps", "2", "--requests", "2"])
    measurer = bg.GpuMeasurer(args, bg.Budget(100))
    backend = FakeBackend(BackendConfig(n_lanes=2, n_ctx=512))
    entry: dict = {}
    saves = []
    asyncio.run(measurer._through_exlsp(backend, ModelShape("llama", vocab=262), entry, lambda: saves.append(1)))
    assert entry["engine"]["decode_tok_s"] > 0 and entry["engine"]["prefill_tok_s"] > 0
    assert len(entry["engine"]["decode_runs"]) == 2 and entry["engine"]["prefill_n_batch"] is None
    assert entry["socket"]["requests"] == 2 and entry["lsp"]["requests"] == 2
    assert len(saves) == 3


def test_typing_prefixes_grow_by_one_character():
    prefixes = bg._typing_prefixes(4)
    assert [len(p) for p in prefixes] == [len(prefixes[0]) + i for i in range(4)]
    assert all(p.startswith(bg.CODE_START) for p in prefixes)


# ---- the command ------------------------------------------------------------------------------------


def parse(argv):
    parser = argparse.ArgumentParser(prog="exlsp bench")
    bg.add_parser(parser.add_subparsers(dest="bench"))
    return parser.parse_args(argv)


def test_parser_defaults():
    args = parse(["gpu", "--out", "r.json"])
    assert args.out == Path("r.json") and args.models == "qwen2.5-coder-1.5b,llama-3-8b"
    assert args.budget_s < 240 and args.prompt_tokens == 2048 and args.decode_tokens == 256


def test_without_cuda_one_clear_line_and_non_zero(tmp_path, capsys):
    status = bg.cuda_status()
    if status[0]:
        pytest.skip("this machine has a CUDA device")
    assert bg.run(parse(["gpu", "--out", str(tmp_path / "r.json")])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(bg.NO_CUDA)
    assert not (tmp_path / "r.json").exists()
