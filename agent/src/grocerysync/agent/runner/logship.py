"""The agent's own log records, turned into :class:`grocerysync.core.wire.LogRecord` data for the hub.

:class:`LogCollector` is a :class:`logging.Handler` on the root logger that keeps the records of the agent's
loggers (``grocerysync.*``, and the plugins' loggers) in memory; the runner moves them to the spool in
batches (:meth:`LogCollector.take`, one SQLite transaction per batch, never one per record) and the shipper
sends them on. Records are redacted (:mod:`.redact`) when they are made, in the thread that logs them, and
tagged with the hub's run id from the :data:`current_run` context variable, which the pipeline's worker
thread inherits.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from grocerysync.agent.runner.redact import Redactor
from grocerysync.core.hookspecs import ENTRY_POINT_GROUP
from grocerysync.core.wire import MAX_MESSAGE

#: The hub's id of the run the code logging right now works for (None outside runs).
current_run: contextvars.ContextVar[int | None] = contextvars.ContextVar("grocerysync_run", default=None)

#: Longest traceback text kept in a record's ``extra``.
MAX_TRACEBACK = 16_000
#: Records kept in memory before the oldest are dropped (only when the spool cannot be written at all).
MAX_BUFFER = 50_000
#: Log lines kept for a diagnostics report, and how long each may be there.
RECENT_LINES = 200
RECENT_LINE_CHARS = 500

_LEVELS = (
    (logging.CRITICAL, "critical"),
    (logging.ERROR, "error"),
    (logging.WARNING, "warning"),
    (logging.INFO, "info"),
)
#: Set on a record (``extra={LOCAL_ONLY: True}``) that must not be shipped: the collector's own trouble.
LOCAL_ONLY = "grocerysync_local_only"


def wire_level(levelno: int) -> str:
    """The wire name of a logging level (custom levels round down to the next known one)."""
    for number, name in _LEVELS:
        if levelno >= number:
            return name
    return "debug"


def cut(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` shortened to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    marker = f" [... {len(text) - limit} more characters cut]"
    return text[: limit - len(marker)] + marker


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and message."""
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ShippedLoggers(logging.Filter):
    """Passes the agent's and the plugins' records: loggers named ``grocerysync...`` or under a plugin module."""

    def __init__(self, plugin_modules: Iterable[str] = ()) -> None:
        super().__init__()
        self.set_modules(plugin_modules)

    def set_modules(self, plugin_modules: Iterable[str]) -> None:
        """The top-level modules of the installed plugins (whose loggers are shipped too)."""
        self._modules = tuple(sorted({m for m in plugin_modules if m}))

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name.startswith("grocerysync"):
            return True
        return any(name == m or name.startswith(m + ".") for m in self._modules)


class RedactingFilter(logging.Filter):
    """Masks the secrets in use in a record's message and exception, before any handler formats it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_grocerysync_redacted", False):
            return True
        message = record.getMessage()
        redacted = self.redactor(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = "".join(traceback.format_exception(exc))
            record.exc_text = self.redactor(text).rstrip("\n")
            # Formatted once, here, redacted: no handler formats the raw exception again.
            record.exc_info = None
            record.grocerysync_exception = self.redactor(one_line(exc))
        elif record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        record._grocerysync_redacted = True
        return True


class ConsoleFilter(logging.Filter):
    """What the console (journald, the Windows service's output file) shows: the agent's and the plugins'
    records at the console's level, and warnings and errors of any other library."""

    def __init__(self, shipped: ShippedLoggers) -> None:
        super().__init__()
        self.shipped = shipped

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or self.shipped.filter(record)


class ConsoleFormatter(logging.Formatter):
    """``time LEVEL logger: message``, with an exception as one line, or its traceback when ``debug``."""

    def __init__(self, *, debug: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(self._prepared(record))
        summary = getattr(record, "grocerysync_exception", None)
        if summary:
            line += f" ({summary})"
        if self.debug and record.exc_text:
            line += "\n" + record.exc_text
        return line

    def _prepared(self, record: logging.LogRecord) -> logging.LogRecord:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        return record


class LogCollector(logging.Handler):
    """Buffers shipped records as wire dicts; :meth:`take` hands them over, oldest first.

    ``on_batch`` is called (from the logging thread) when ``batch_size`` records are waiting, so the runner
    can move them to the spool before the next timed flush.
    """

    def __init__(
        self,
        redactor: Redactor,
        *,
        plugin_modules: Iterable[str] = (),
        batch_size: int = 500,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(logging.INFO)
        self.loggers = ShippedLoggers(plugin_modules)
        self.addFilter(self.loggers)
        self.addFilter(RedactingFilter(redactor))
        self.batch_size = batch_size
        self.on_batch = on_batch
        self._buffer: deque[dict[str, Any]] = deque()
        self._buffer_lock = threading.Lock()
        self.overflowed = 0
        self.recent: deque[str] = deque(maxlen=RECENT_LINES)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, LOCAL_ONLY, False):
            return
        try:
            entry = self._entry(record)
        except Exception:  # a record that cannot be turned into data must not break the code that logged it
            self.handleError(record)
            return
        line = f"{entry['at'][:19]} {entry['level'].upper()} {entry['logger']}: {entry['message']}"
        with self._buffer_lock:
            self._buffer.append(entry)
            if len(self._buffer) > MAX_BUFFER:
                self._buffer.popleft()
                self.overflowed += 1
            waiting = len(self._buffer)
            self.recent.append(cut(line, RECENT_LINE_CHARS))
        if waiting == self.batch_size and self.on_batch is not None:
            self.on_batch()

    def _entry(self, record: logging.LogRecord) -> dict[str, Any]:
        message = record.getMessage()
        extra: dict[str, Any] = {}
        summary = getattr(record, "grocerysync_exception", None)
        if summary:
            message = f"{message} ({summary})"
        if record.exc_text:
            extra["traceback"] = cut(record.exc_text, MAX_TRACEBACK)
        run = current_run.get()
        return {
            "uid": str(uuid.uuid4()),
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": wire_level(record.levelno),
            "logger": record.name[:200],
            "message": cut(message),
            "run_id": run,
            "extra": extra,
        }

    def take(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Remove and return up to ``limit`` (default: all) waiting records, oldest first."""
        with self._buffer_lock:
            count = len(self._buffer) if limit is None else min(limit, len(self._buffer))
            return [self._buffer.popleft() for _ in range(count)]

    def put_back(self, entries: list[dict[str, Any]]) -> None:
        """Return records :meth:`take` handed out that could not be spooled, in front of newer ones."""
        with self._buffer_lock:
            self._buffer.extendleft(reversed(entries))
            while len(self._buffer) > MAX_BUFFER:
                self._buffer.popleft()
                self.overflowed += 1

    def waiting(self) -> int:
        """How many records are buffered."""
        with self._buffer_lock:
            return len(self._buffer)

    def recent_lines(self, count: int = 100) -> list[str]:
        """The last ``count`` shipped log lines, oldest first (for diagnostics)."""
        with self._buffer_lock:
            return list(self.recent)[-count:]


def plugin_modules() -> list[str]:
    """The top-level modules of the installed plugins' entry points: their loggers are shipped too."""
    try:
        return sorted({ep.module.split(".")[0] for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
    except Exception:  # broken metadata of some distribution: ship grocerysync.* only
        return []


def install(collector: LogCollector, console: logging.Handler | None, redactor: Redactor) -> Callable[[], None]:
    """Put the collector (and the console handler, redacted) on the root logger; returns the undo."""
    root = logging.getLogger()
    agent = logging.getLogger("grocerysync")
    before = (root.level, agent.level)
    root.addHandler(collector)
    if console is not None:
        console.addFilter(RedactingFilter(redactor))
        console.addFilter(ConsoleFilter(collector.loggers))
        root.addHandler(console)

    def restore() -> None:
        root.removeHandler(collector)
        if console is not None:
            root.removeHandler(console)
        root.setLevel(before[0])
        agent.setLevel(before[1])

    return restore


def apply_level(collector: LogCollector, console: logging.Handler | None, level: str) -> None:
    """Ship records at ``level`` (the hub's ``log_level``) and up; let the loggers make what either handler wants."""
    shipped = logging.getLevelName(level.upper())
    collector.setLevel(shipped)
    lowest = min(shipped, console.level if console is not None else logging.INFO, logging.INFO)
    # Plugins log under their own module names, below the root logger, so the root's level gates them too.
    logging.getLogger().setLevel(lowest)
    logging.getLogger("grocerysync").setLevel(lowest)
