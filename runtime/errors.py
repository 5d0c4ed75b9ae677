"""Errors the runtime raises to its callers, each with a message fit to show a user as is."""


class ExlspError(Exception):
    """Base class: the message is a complete sentence for the user."""


class ModelError(ExlspError):
    """The model cannot be found, read or loaded."""


class BackendUnavailable(ExlspError):
    """The backend's package or hardware is missing on this machine."""


class EngineClosed(ExlspError):
    """The engine was shut down; no more jobs are taken."""
