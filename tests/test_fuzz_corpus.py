"""The fuzz harnesses of ``tests/fuzz/``: their corpora replayed on every run, and, where atheris is
installed, a short coverage-guided run of each (docs/fuzzing.md).

1. Every file of ``tests/fuzz/corpus/<target>/`` goes through its harness's ``TestOneInput`` as a
   plain function: the inputs that once crashed exlsp or showed a bug (``crash-*``, ``bug-*``)
   stay fixed, and the seeds (``seed-*``) keep the harnesses themselves honest. No atheris needed.
2. With atheris importable, each harness runs as a libFuzzer subprocess for ``EXLSP_FUZZ_SECONDS``
   (default 10; 0 skips) from its corpus, writing new inputs to a temporary folder; a crash fails
   the test with the path of the input that caused it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).parent / "fuzz"
CORPUS = FUZZ / "corpus"
TARGETS = ("wire", "framing", "lsp_params", "positions", "postprocess")


def harness(target: str) -> ModuleType:
    """``tests/fuzz/fuzz_<target>.py`` as a module (imported once; no atheris involved)."""
    name = f"fuzz_{target}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FUZZ / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


CASES = [
    pytest.param(target, path, id=f"{target}/{path.name}")
    for target in TARGETS
    for path in sorted((CORPUS / target).iterdir())
    if path.is_file()
]


def test_every_target_has_a_harness_and_a_corpus():
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == sorted(TARGETS)
    for target in TARGETS:
        names = [p.name for p in (CORPUS / target).iterdir()]
        assert any(n.startswith("seed-") for n in names), target
        assert callable(harness(target).TestOneInput)
    found = [n for t in TARGETS for n in os.listdir(CORPUS / t) if n.startswith(("crash-", "bug-"))]
    assert len(found) >= 10  # the regressions found while fuzzing (docs/fuzzing.md)


@pytest.mark.parametrize("target, path", CASES)
def test_corpus_input(target, path):
    harness(target).TestOneInput(path.read_bytes())


def _atheris_missing() -> str | None:
    if importlib.util.find_spec("atheris") is None:
        return "atheris is not installed (pip install 'atheris==3.0.0'); the corpus replay above still runs"
    if _seconds() <= 0:
        return "EXLSP_FUZZ_SECONDS=0"
    return None


def _seconds() -> int:
    return int(os.environ.get("EXLSP_FUZZ_SECONDS", "10"))


@pytest.mark.skipif(_atheris_missing() is not None, reason=_atheris_missing() or "")
@pytest.mark.parametrize("target", TARGETS)
def test_fuzz(target, tmp_path):
    seconds = _seconds()
    fresh = tmp_path / "new-inputs"
    fresh.mkdir()
    cmd = [
        sys.executable, str(FUZZ / f"fuzz_{target}.py"),
        f"-max_total_time={seconds}", "-rss_limit_mb=2048", "-timeout=30",
        f"-artifact_prefix={tmp_path}/",
        str(fresh), str(CORPUS / target),  # the first folder receives new inputs, the rest seed
    ]  # fmt: skip
    if (FUZZ / f"{target}.dict").exists():
        cmd.insert(2, f"-dict={FUZZ / f'{target}.dict'}")
    run = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=seconds + 120)
    artifacts = sorted(p for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-")))
    if run.returncode != 0 or artifacts:
        where = ", ".join(map(str, artifacts)) or "no input saved"
        pytest.fail(
            f"fuzz_{target} found a failing input: {where}\n"
            f"(replay: python tests/fuzz/fuzz_{target}.py PATH; keep it in tests/fuzz/corpus/{target}/)\n"
            + run.stderr[-4000:]
        )
    assert "Done" in run.stderr, run.stderr[-2000:]
