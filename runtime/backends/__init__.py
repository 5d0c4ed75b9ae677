"""Backends behind one interface (``base.Backend``), imported only when asked for, so that
``exlsp.runtime`` imports on machines without llama.cpp or CUDA."""

from __future__ import annotations

import threading

from ..errors import ModelError
from ..model_path import ModelSpec
from .base import Backend, BackendConfig, ProgressCallback

__all__ = ["Backend", "BackendConfig", "load_backend", "model_loads"]

_loads = 0
_loads_lock = threading.Lock()


def model_loads() -> int:
    """How many models this process has loaded (status reports it: reloads are bugs)."""
    return _loads


def load_backend(spec: ModelSpec, config: BackendConfig, progress: ProgressCallback | None = None) -> Backend:
    global _loads
    if spec.backend == "llamacpp":
        from .llamacpp import LlamaCppBackend

        backend: Backend = LlamaCppBackend.load(spec.path, config, progress)
    elif spec.backend == "exllamav2":
        from .exllamav2 import ExLlamaV2Backend

        backend = ExLlamaV2Backend.load(spec.path, config, progress)
    else:
        raise ModelError(f"unknown backend {spec.backend!r} for {spec.path}")
    with _loads_lock:
        _loads += 1
    return backend
