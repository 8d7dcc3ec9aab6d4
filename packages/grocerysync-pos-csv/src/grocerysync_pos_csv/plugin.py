"""The ``csv`` POS connector: registration, ``check`` and ``read``.

Reading the file can block (an export on a network share, say), so it is done ahead on a thread of its own;
the rows are parsed on the event loop, a batch (a few milliseconds) at a time. Parsing on the thread as well
was slower: the two threads only took turns for the interpreter lock, and switching cost more than it saved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from grocerysync.core.errors import SourceError
from grocerysync.core.hookspecs import hookimpl
from grocerysync.core.records import PosConnector, ReadRequest
from grocerysync.core.results import CheckResult, RawBatch
from grocerysync_pos_csv.config import CsvConfig
from grocerysync_pos_csv.reader import CsvExportReader

#: A file older than this is reported by ``check`` as possibly no longer exported.
STALE_AFTER_SECONDS = 26 * 3600


async def read(config: CsvConfig, request: ReadRequest) -> AsyncIterator[RawBatch]:
    """Stream the export as batches of at most ``request.batch_size`` records (the whole file each run).

    Raises :class:`SourceError` for problems with the whole file (missing, unreadable, empty, a mapped
    column absent from the header). Rows that cannot be read are returned as rejections with their row number.
    """
    # One thread of its own for the whole read, rather than asyncio's shared pool: a pool may start a new
    # thread for each of the quick successive reads, and each thread that allocates gets a memory arena.
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(1, thread_name_prefix="grocerysync-csv")
    try:
        reader = await loop.run_in_executor(thread, CsvExportReader.open, config)
        try:
            while True:
                if reader.wants_read_ahead:  # a round trip to the thread costs more than parsing a few rows
                    await loop.run_in_executor(thread, reader.read_ahead)
                batch = reader.next_batch(request.batch_size)
                if batch is None:
                    return
                yield batch
        finally:
            reader.close()
    finally:
        thread.shutdown(wait=False)


async def check(config: CsvConfig) -> CheckResult:
    """Is the export there and readable, with the mapped columns? Reads only the start of the file."""
    return await asyncio.to_thread(_check, config)


def _check(config: CsvConfig) -> CheckResult:
    try:
        reader = CsvExportReader.open(config)
    except SourceError as exc:
        return CheckResult.failure(str(exc))
    try:
        stat = Path(config.path).stat()
    except OSError as exc:  # removed between opening and looking at it
        return CheckResult.failure(f"POS export file {config.path} cannot be examined: {exc.strerror or exc}")
    finally:
        reader.close()
    name = Path(config.path).name
    age = max(0.0, time.time() - stat.st_mtime)
    modified = datetime.fromtimestamp(stat.st_mtime).strftime("%Y-%m-%d %H:%M")
    columns = (
        f"the header (row {reader.header_line}) has all {len(config.columns)} mapped columns"
        if reader.header is not None
        else f"{reader.column_count} columns in its first row, {len(config.columns)} mapped by number"
    )
    message = f"{name}: {_size(stat.st_size)}, modified {modified} ({_ago(age)}); {columns}"
    if age > STALE_AFTER_SECONDS:
        message += " — the file is more than a day old: check that the POS still exports it on schedule"
    return CheckResult.success(message)


def _size(size: int) -> str:
    if size < 1024:
        return f"{size:,} bytes"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return "just now"
    for span, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= span:
            count = round(seconds / span)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


CONNECTOR = PosConnector(
    name="csv",
    description="Reads the item export (a CSV file) that the store's POS writes, in any common CSV dialect",
    config_model=CsvConfig,
    check=check,
    read=read,
    supports_incremental=False,
)


@hookimpl
def grocerysync_pos_connectors() -> Iterable[PosConnector]:
    """Register the ``csv`` POS connector."""
    return [CONNECTOR]
