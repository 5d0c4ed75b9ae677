"""Custom-method params arrive from pygls as whatever its converter made of them; turn them back
into plain JSON values so msgspec can validate them."""

from __future__ import annotations

from typing import Any


def raw_params(params: Any) -> Any:
    if params is None or isinstance(params, (str, int, float, bool)):
        return params
    if isinstance(params, dict):
        return {k: raw_params(v) for k, v in params.items()}
    if hasattr(params, "_asdict"):  # pygls structures unknown objects as namedtuples
        return {k: raw_params(v) for k, v in params._asdict().items()}
    if isinstance(params, (list, tuple)):
        return [raw_params(v) for v in params]
    if hasattr(params, "__dict__"):
        return {k: raw_params(v) for k, v in vars(params).items()}
    return params
