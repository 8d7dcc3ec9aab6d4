"""Keeping destination secrets out of everything the agent writes down or sends back.

Secrets arrive only inside a run's assignment and are used only in memory. Plugins are written not to log
them, but a library error message may still quote one (``login failed for password 'hunter2'``); every
log record and every report passes through :class:`Redactor` first, which replaces the secrets of the
runs in progress with ``***``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

#: What a secret is replaced with.
MASK = "***"
#: Values shorter than this are not redacted: masking every "1" or "no" would garble the text and hide nothing.
MIN_LENGTH = 4


class Redactor:
    """The secret values currently in use; thread-safe (log records are redacted in the pipeline's thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Counter[str] = Counter()
        self._ordered: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> None:
        """Start masking ``values`` (a run's destination secrets); balanced by :meth:`remove`."""
        with self._lock:
            self._values.update(v for v in values if len(v) >= MIN_LENGTH)
            self._reorder()

    def remove(self, values: Iterable[str]) -> None:
        """Stop masking ``values`` once their run is over and its reports are redacted."""
        with self._lock:
            self._values.subtract(v for v in values if len(v) >= MIN_LENGTH)
            self._values = +self._values  # drop zero counts
            self._reorder()

    def _reorder(self) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        """``text`` with every secret in use replaced by ``***``."""
        for value in self._ordered:
            if value in text:
                text = text.replace(value, MASK)
        return text
