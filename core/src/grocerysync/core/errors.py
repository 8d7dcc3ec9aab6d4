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
    """The destination failed as a whole. ``retryable`` marks transient failures; ``retry_after`` is how many
    seconds the platform asked to wait before the next attempt (an HTTP 429 or 503 answer's ``Retry-After``),
    which makes the failure retryable: the agent waits at least that long, up to five minutes. A wait below
    zero (a ``Retry-After`` date already past) counts as none; one that is not a number (NaN) is ignored."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            retry_after = max(0.0, float(retry_after)) if retry_after == retry_after else None
        self.retry_after = retry_after
        self.retryable = retryable or retry_after is not None
