"""Typed settings for the language server, with a forgiving fallback.

Precedence: config file < LSP ``initializationOptions`` < ``workspace/didChangeConfiguration``.
An invalid value falls back to its default and produces a warning the client shows with
``window/showMessage``; it never fails a request. Names are camelCase on the wire.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Mapping

import msgspec

# Out of range is invalid like a wrong type (found by fuzzing): a negative maxTokens made every
# completion one token long, a negative maxCharsRight skipped every automatic trigger, silently.
Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class CompletionSettings(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    enabled: bool = True
    # "auto": serve textDocument/completion only to clients without inline completion.
    fallback: Literal["auto", "on", "off"] = "auto"
    auto_trigger: bool = True
    max_tokens: Positive = 64
    budget_tokens: Positive = 1024
    time_budget_ms: Annotated[float, msgspec.Meta(ge=0)] = 1500.0  # also refuses NaN
    # No automatic trigger with more than this many non-space characters right of the cursor.
    max_chars_right: NonNegative = 8
    max_document_bytes: NonNegative = 8_000_000


class ChatSettings(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    max_tokens: Positive = 512


class Settings(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    completion: CompletionSettings = msgspec.field(default_factory=CompletionSettings)
    chat: ChatSettings = msgspec.field(default_factory=ChatSettings)
    plugins: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _convert_section(cls: type[msgspec.Struct], raw: Any, path: str, warnings: list[str]) -> Any:
    """Convert one section field by field, so one bad value costs only that value."""
    if not isinstance(raw, Mapping):
        if raw is not None:
            warnings.append(f"exlsp: setting {path} must be an object; using defaults")
        return cls()
    good: dict[str, Any] = {}
    default = msgspec.to_builtins(cls())
    for key, value in raw.items():
        try:
            msgspec.convert({**default, key: value}, cls)
        except (msgspec.ValidationError, UnicodeEncodeError) as exc:  # a lone surrogate (found by fuzzing)
            why = _clip(str(exc), 160) if isinstance(exc, msgspec.ValidationError) else "not valid Unicode"
            warnings.append(f"exlsp: invalid setting {path}.{_clip(str(key), 64)} = {_short(value)} ({why}); using the default")
            continue
        good[key] = value
    return msgspec.convert({**default, **good}, cls)


def _clip(text: str, limit: int) -> str:
    """Text for a warning the client shows: short (a megabyte string is no message), and
    printable in UTF-8 even with a lone surrogate in it."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _short(value: Any) -> str:
    return _clip(repr(value), 80)


def parse_settings(*layers: Mapping[str, Any] | None) -> tuple[Settings, list[str]]:
    """Merge the layers (later wins) into Settings; return it and the warnings to show."""
    merged: dict[str, Any] = {}
    warnings: list[str] = []
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            warnings.append("exlsp: settings must be an object; ignored")
            continue
        # Clients often nest settings under the server's name.
        layer = layer.get("exlsp", layer) if isinstance(layer.get("exlsp"), Mapping) else layer
        merged = _deep_merge(merged, layer)
    plugins = merged.get("plugins", {})
    if not isinstance(plugins, Mapping) or not all(isinstance(v, Mapping) for v in plugins.values()):
        warnings.append("exlsp: setting plugins must map plugin names to objects; ignored")
        plugins = {}
    settings = Settings(
        completion=_convert_section(CompletionSettings, merged.get("completion", {}), "completion", warnings),
        chat=_convert_section(ChatSettings, merged.get("chat", {}), "chat", warnings),
        plugins={k: dict(v) for k, v in plugins.items()},
    )
    return settings, warnings


def settings_schema() -> dict[str, Any]:
    """JSON Schema of the settings, for editors' configuration UIs."""
    return msgspec.json.schema(Settings)
