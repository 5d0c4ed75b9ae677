"""The GPU tier: the ExLlamaV2 backend on the two test models of ``exlsp.runtime.testmodels``
(a Llama and a Qwen2, FP16, made on the spot), through the backend, the engine, the language
server and the Unix socket.

Every test here is marked ``gpu`` and skipped, with the reason, where torch sees no CUDA device or
exllamav2 is missing. That is decided without importing exllamav2: its import compiles a CUDA
extension.

``EXLSP_GPU_TEST_BACKEND=reference`` runs the same tests on the torch reference backend instead
(on the CPU; slower, exact): a check of the tests themselves on a machine without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from exlsp.runtime import BackendConfig, Engine
from exlsp.runtime.lanes import common_prefix_len
from exlsp.runtime.testmodels import LOGIT_MEAN_TOLERANCE, LOGIT_TOLERANCE

BACKEND = os.environ.get("EXLSP_GPU_TEST_BACKEND", "exllamav2")
ARCHS = ("llama", "qwen2")
HERE = Path(__file__).resolve().parent
CODE = HERE.parents[1] / "runtime" / "engine.py"  # real source text for prompts

# Logits are compared with the fp32 reference within testmodels.LOGIT_TOLERANCE (the reasons are
# there); greedy tokens only where the reference's top-1 margin leaves no doubt.
LOGIT_TOL = LOGIT_TOLERANCE
LOGIT_MEAN_TOL = LOGIT_MEAN_TOLERANCE
SAFE_MARGIN = 2 * LOGIT_TOL


def _why_skip() -> str | None:
    if BACKEND not in ("exllamav2", "reference"):
        return f"EXLSP_GPU_TEST_BACKEND={BACKEND!r}: use exllamav2 or reference"
    for module in ("torch", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    if BACKEND == "reference":
        return None
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is false)"
    if importlib.util.find_spec("exllamav2") is None:
        return "exllamav2 is not installed"
    return None


SKIP_REASON = _why_skip()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=f"GPU tests: {SKIP_REASON}"))


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def device(torch) -> str:
    return "cuda" if BACKEND == "exllamav2" else "cpu"


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    from exlsp.runtime import testmodels

    root = tmp_path_factory.mktemp("gpu-models")
    shapes = {"llama": testmodels.TEST_LLAMA, "qwen2": testmodels.TEST_QWEN2}
    return {arch: testmodels.write_shape(root / f"test-{arch}", shape) for arch, shape in shapes.items()}


@pytest.fixture(scope="session")
def references(model_dirs, device):
    from exlsp.runtime.testmodels import Reference

    return {arch: Reference(path, device=device) for arch, path in model_dirs.items()}


def load_backend_for_tests(path: Path, config: BackendConfig):
    if BACKEND == "reference":
        from exlsp.runtime.testmodels import ReferenceBackend

        return ReferenceBackend(path, config)
    from exlsp.runtime import load_backend, resolve_model

    return load_backend(resolve_model(path, "exllamav2"), config)


@pytest.fixture(scope="session")
def engines(model_dirs):
    """One engine per test model for the whole session (loaded on first use): 3 lanes of 2,048
    tokens, two for completions, one for chat; prefill in chunks of 64 so that prompts of a few
    hundred tokens cross several chunk boundaries."""
    made: dict[str, Engine] = {}

    def get(arch: str) -> Engine:
        if arch not in made:
            config = BackendConfig(n_lanes=3, n_ctx=2048, n_batch=64)
            made[arch] = Engine(load_backend_for_tests(model_dirs[arch], config),
                                lane_groups={"completion": 2, "chat": 1})  # fmt: skip
        return made[arch]

    yield get
    for engine in made.values():
        engine.close()


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param


@pytest.fixture
def engine(engines, arch) -> Engine:
    """The arch's engine with every lane emptied (tests may have used the backend directly)."""
    eng = engines(arch)
    for lane in range(eng.backend.n_lanes):
        eng.backend.truncate(lane, 0)
    eng.lanes.clear()
    return eng


@pytest.fixture
def reference(references, arch):
    return references[arch]


def lane_length(engine: Engine, lane: int) -> int:
    """How many tokens the backend's cache for ``lane`` holds."""
    backend = engine.backend
    if hasattr(backend, "lane_length"):
        return backend.lane_length(lane)
    return int(backend._caches[lane].current_seq_len)  # ExLlamaV2Cache


@pytest.fixture
def books_match():
    """Assert that the engine's book of each lane agrees with the backend's cache."""

    def check(engine: Engine) -> None:
        for lane in engine.lanes.lanes:
            assert lane_length(engine, lane.index) == len(lane.tokens), f"lane {lane.index}"

    return check


@pytest.fixture
def expected_reuse():
    def expected(prompt: list[int], lane_tokens: list[int]) -> int:
        return min(common_prefix_len(prompt, lane_tokens), len(prompt) - 1)

    return expected


@pytest.fixture(scope="session")
def code_text() -> str:
    return CODE.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def gpu() -> SimpleNamespace:
    """What the tests need to know about this run."""
    return SimpleNamespace(backend=BACKEND, tol=LOGIT_TOL, mean_tol=LOGIT_MEAN_TOL, safe_margin=SAFE_MARGIN)


@pytest.fixture(scope="session")
def compare():
    """``compare(got, want, where)``: assert the backend's logits ``got`` (vocab-sized numpy) match
    the reference row ``want`` (a torch tensor, possibly wider: the head's padding rows); the same
    top-1 token where the reference leaves no doubt. Returns the largest difference."""

    def check(got: np.ndarray, want, where: str) -> float:
        want = want.detach().float().cpu().numpy()[: got.shape[0]]
        diff = np.abs(got.astype(np.float64) - want)
        assert diff.max() <= LOGIT_TOL and diff.mean() <= LOGIT_MEAN_TOL, (
            f"{where}: logits differ from the fp32 reference by up to {diff.max():.3f} "
            f"(mean {diff.mean():.4f}; tolerance {LOGIT_TOL}, mean {LOGIT_MEAN_TOL})"
        )
        top = np.sort(want)[-2:]
        if top[1] - top[0] > SAFE_MARGIN:
            assert int(np.argmax(got)) == int(np.argmax(want)), f"{where}: another top-1 token"
        return float(diff.max())

    return check
