"""Every hook exlsp calls, in one place. Project name ``exlsp``; every hook starts with ``exlsp_``.

A plugin is a module or object with functions named like these, decorated with
``exlsp.plugins.hookimpl``. Registration hooks receive a ``register`` callable and call it once per
object they provide (see ``api.py`` for the objects' protocols). Built-in plugins use exactly the
same hooks as third-party ones.
"""

from __future__ import annotations

from typing import Any

import pluggy

from .api import Register

PROJECT = "exlsp"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def exlsp_register_prompt_formats(register: Register) -> None:
    """Register ``PromptFormat`` objects (FIM / prefix-only completion prompts)."""


@hookspec
def exlsp_register_chat_formats(register: Register) -> None:
    """Register ``ChatFormat`` objects (turn chat messages into a prompt)."""


@hookspec
def exlsp_register_context_providers(register: Register) -> None:
    """Register ``ContextProvider`` objects (extra context for completion, shell or chat)."""


@hookspec
def exlsp_register_postprocessors(register: Register) -> None:
    """Register ``PostProcessor`` objects (rewrite or drop raw completions)."""


@hookspec
def exlsp_register_chat_commands(register: Register) -> None:
    """Register ``ChatCommand`` objects (``/explain``, ``/fix`` ...)."""


@hookspec
def exlsp_default_settings() -> dict[str, Any]:
    """This plugin's settings and their defaults, e.g. ``{"max_lines": 5}``. The user overrides
    them in the config file under ``[plugins.<plugin name>]``."""
