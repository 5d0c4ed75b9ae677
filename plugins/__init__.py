"""Prompt building, context gathering and post-processing plugins (pluggy, project ``exlsp``).

Write a plugin with ``hookimpl`` and the hooks in ``hookspecs``; register objects following the
protocols in ``api``. See docs/plugins.md.
"""

from .hookspecs import PROJECT, hookimpl, hookspec

__all__ = ["PROJECT", "hookimpl", "hookspec"]
