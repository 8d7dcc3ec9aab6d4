"""The errors the SDK raises. Each message says what failed, where, and what to do next."""

from __future__ import annotations


class GrocerySyncError(Exception):
    """Base class: an error whose message is meant for a person (technician, operator, author)."""


class PluginError(GrocerySyncError):
    """A plugin is missing, broken, or clashes with another."""


class ConfigError(GrocerySyncError):
    """A job or plugin configuration is invalid; ``errors`` lists ``{"field", "message"}`` pairs."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class SourceError(GrocerySyncError):
    """The POS could not be read at all (as opposed to single bad rows, which are rejections)."""


class DestinationError(GrocerySyncError):
    """The destination failed as a whole. ``retryable`` marks transient failures."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
