"""The runtime: one resident model, an engine thread, KV cache lanes, backends.

Knows nothing of LSP, sockets or plugins. Typical use::

    spec = resolve_model(None)                  # the default model
    engine = load_engine(spec, BackendConfig())
    stream = await engine.generate(GenerationRequest(prompt="def add(a, b):", max_tokens=16))
    async for event in stream: ...              # Delta ... then one Completion
"""

from __future__ import annotations

import dataclasses

from .backends import Backend, BackendConfig, load_backend, model_loads
from .backends.base import ProgressCallback
from .engine import Engine, EngineStats, JobStream
from .errors import BackendUnavailable, EngineClosed, ExlspError, ModelError
from .model_path import ModelSpec, find_default_model, resolve_model
from .tokenizer import Tokenizer
from .types import Completion, Delta, GenerationRequest, Priority, SamplingParams, SpecialTokens

__all__ = [
    "Backend",
    "BackendConfig",
    "BackendUnavailable",
    "Completion",
    "Delta",
    "Engine",
    "EngineClosed",
    "EngineStats",
    "ExlspError",
    "GenerationRequest",
    "JobStream",
    "ModelError",
    "ModelSpec",
    "Priority",
    "SamplingParams",
    "SpecialTokens",
    "Tokenizer",
    "find_default_model",
    "load_backend",
    "load_engine",
    "model_loads",
    "resolve_model",
]


def load_engine(
    spec: ModelSpec,
    config: BackendConfig | None = None,
    *,
    lane_groups: dict[str, int] | None = None,
    progress: ProgressCallback | None = None,
) -> Engine:
    """Load the model (blocking: call it from a worker thread in async code) and start its engine."""
    config = config or BackendConfig()
    if lane_groups:
        config = dataclasses.replace(config, n_lanes=sum(lane_groups.values()))
    return Engine(load_backend(spec, config, progress), lane_groups=lane_groups)
