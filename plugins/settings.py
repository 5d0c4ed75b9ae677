"""The config file (``$XDG_CONFIG_HOME/exlsp/config.toml``) and plugin settings.

Only the plugin part is typed here; the rest of the file is kept in ``Config.raw`` for the
settings that come later. Nothing in this module raises on bad input: a broken file or a wrong
value falls back to the default and says so in ``warnings``, for the user to see.

```toml
[plugins]
dirs = ["~/src/my-exlsp-plugins"]   # extra local plugin folders (relative: to this file's folder)
allow = ["fim", "postprocess"]      # only these plugins load (absent: all)
block = ["shell"]                   # these never load

[plugins.postprocess]               # settings of the plugin named "postprocess"
max_lines = 5
```
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys of [plugins] that are not plugin names.
RESERVED = frozenset({"dirs", "allow", "block"})


def config_home() -> Path:
    # The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    return Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"


def default_config_path() -> Path:
    return config_home() / "exlsp" / "config.toml"


def default_plugins_dir() -> Path:
    return config_home() / "exlsp" / "plugins"


@dataclass
class Config:
    """What ``load_config`` found. Pass the plugin fields on to ``PluginManager``."""

    path: Path | None = None
    plugins_dirs: list[Path] = field(default_factory=list)
    plugins_allow: list[str] | None = None
    plugins_block: list[str] = field(default_factory=list)
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def load_config(path: Path | None = None) -> Config:
    """Read the config file; ``path`` None means the default one, which may be absent."""
    explicit = path is not None
    path = Path(path).expanduser() if path is not None else default_config_path()
    config = Config(path=path)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            config.warnings.append(f"{path}: no such config file; using the defaults")
        return config
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        config.warnings.append(f"{path}: cannot read it ({exc}); using the defaults")
        return config
    config.raw = raw
    plugins = raw.get("plugins", {})
    if not isinstance(plugins, dict):
        config.warnings.append(f"{path}: [plugins] must be a table; ignored")
        return config
    _read_plugins_table(config, path, plugins)
    return config


def _read_plugins_table(config: Config, path: Path, table: dict[str, Any]) -> None:
    dirs = _string_list(config, path, table, "dirs")
    for d in dirs or ():
        folder = Path(d).expanduser()
        # Relative to the config file, never to the cwd: plugins never come from the workspace.
        config.plugins_dirs.append(folder if folder.is_absolute() else path.parent / folder)
    config.plugins_allow = _string_list(config, path, table, "allow")
    config.plugins_block = _string_list(config, path, table, "block") or []
    for name, value in table.items():
        if name in RESERVED:
            continue
        if isinstance(value, dict):
            config.plugin_settings[name] = value
        else:
            config.warnings.append(
                f"{path}: plugins.{name} = {value!r} is neither a setting of [plugins] nor a "
                f"[plugins.{name}] table; ignored"
            )


def _string_list(config: Config, path: Path, table: dict[str, Any], key: str) -> list[str] | None:
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    config.warnings.append(f"{path}: plugins.{key} must be a list of strings, not {value!r}; ignored")
    return None


def merge_settings(
    plugin: str, defaults: Mapping[str, Any], user: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """The plugin's defaults overridden by the user's values. Keys the plugin does not declare are
    kept (the plugin may read them); a value of the wrong type keeps the default, with a warning."""
    merged = dict(defaults)
    problems: list[str] = []
    for key, value in (user or {}).items():
        if key in defaults and not _same_kind(defaults[key], value):
            default = defaults[key]
            problems.append(
                f"[plugins.{plugin}] {key} = {value!r} is a {type(value).__name__}, expected "
                f"{type(default).__name__}; using the default {default!r}"
            )
            continue
        merged[key] = value
    return merged, problems


def _same_kind(default: Any, value: Any) -> bool:
    if default is None:
        return True
    # bool is an int in Python but `true` is no number to a user.
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple, Set)):
        # TOML has arrays only, so any collection default accepts one.
        return isinstance(value, (list, tuple, Set))
    if isinstance(default, Mapping):
        return isinstance(value, Mapping)
    return isinstance(value, type(default))
