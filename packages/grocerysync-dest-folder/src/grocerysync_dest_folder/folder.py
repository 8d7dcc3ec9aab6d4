"""The ``folder`` destination: one feed file per run, written atomically into a local or network folder.

The feed is written to ``.<name>.part`` in the target folder and renamed into place (``os.replace``)
on commit, so whatever picks files up from the folder never sees half a file; a run that ends
without commit leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from grocerysync.core.errors import DestinationError
from grocerysync.core.feeds import (
    FeedFormat,
    FeedWriter,
    check_file_prefix,
    empty_feed_message,
    feed_file_name,
    parse_feed_file_name,
)
from grocerysync.core.items import Item
from grocerysync.core.records import NoSecrets, WriteContext
from grocerysync.core.results import CheckResult, ItemResult

log = logging.getLogger(__name__)


class FolderConfig(BaseModel):
    """Where and how the feed file is written."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    path: Annotated[str, Field(min_length=1, max_length=1024)]
    """The folder on the store machine (a local path or a mounted network share)."""
    format: FeedFormat = FeedFormat.CSV
    """``csv`` (Instacart-style catalogue columns) or ``jsonl`` (one upsert/delete per line)."""
    file_prefix: Annotated[str, Field(max_length=64)] = ""
    """Put in front of every feed file name, e.g. ``store12_``."""
    keep_files: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Keep only this many of this job's newest feed files in the folder; keep all when unset."""

    @field_validator("file_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_file_prefix(value)

    @property
    def folder(self) -> Path:
        """The folder as a path, with ``~`` expanded."""
        return Path(self.path).expanduser()


def _problem(folder: Path) -> str | None:
    """Why feed files cannot be written to ``folder``, or None when they can."""
    if not folder.exists():
        return f"folder {folder} does not exist on this machine: create it, or correct the destination's path"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder: set the destination's path to a folder"
    # Write a real file: os.access() cannot see network-share or ACL permissions.
    probe = folder / f".grocerysync-probe-{uuid.uuid4().hex[:12]}"
    try:
        probe.write_bytes(b"probe\n")
    except OSError as exc:
        return (
            f"cannot write to folder {folder} ({exc.strerror or exc}): give the account the GrocerySync agent "
            "runs as permission to write there, or choose another folder"
        )
    try:
        probe.unlink()
    except OSError as exc:
        return (
            f"can create but not delete files in folder {folder} ({exc.strerror or exc}): the agent must be "
            "allowed to replace and clean up its feed files there"
        )
    return None


async def check(config: FolderConfig, secrets: NoSecrets) -> CheckResult:
    """Is the folder there and writable? (A probe file is written and removed.)"""
    problem = await asyncio.to_thread(_problem, config.folder)
    if problem:
        return CheckResult.failure(problem)
    return CheckResult.success(f"folder {config.folder} is writable")


def prune(folder: Path, prefix: str, job_name: str, keep: int) -> list[str]:
    """Delete this job's feed files in ``folder`` beyond the newest ``keep``; return the names removed.

    Only names made by :func:`~grocerysync.core.feeds.feed_file_name` for this prefix and job are
    touched; a file that cannot be removed is logged and left.
    """
    mine = [
        parsed
        for entry in folder.iterdir()
        if (parsed := parse_feed_file_name(entry.name, prefix=prefix, job_name=job_name)) is not None
    ]
    mine.sort(key=lambda f: f.sort_key)
    removed = []
    for old in mine[: max(0, len(mine) - keep)]:
        try:
            (folder / old.name).unlink()
        except OSError as exc:
            log.warning("could not remove old feed file %s: %s", folder / old.name, exc.strerror or exc)
        else:
            removed.append(old.name)
    return removed


class FolderWriter:
    """One run's feed file in the folder (see :class:`grocerysync.core.records.DestinationWriter`)."""

    def __init__(self, config: FolderConfig, context: WriteContext) -> None:
        self.config = config
        self.context = context
        folder = config.folder
        self.name = feed_file_name(config.file_prefix, context.job_name, context.mode, context.run_id, config.format)
        self.final_path = folder / self.name
        self.part_path = folder / f".{self.name}.part"
        if not folder.is_dir():
            raise DestinationError(
                f"folder {folder} does not exist on this machine: create it, or correct the destination's path"
            )
        self._feed = FeedWriter(self.part_path, config.format)
        self._committed: str | None = None

    async def write(self, items: Sequence[Item]) -> list[ItemResult]:
        """Append the items to the feed (a network folder may be slow: the write runs in a thread)."""
        self._writable()
        return await asyncio.to_thread(self._feed.write, items)

    async def delete(self, item_ids: Sequence[str]) -> list[ItemResult]:
        """Append deletions to the feed."""
        self._writable()
        return await asyncio.to_thread(self._feed.delete, item_ids)

    def _writable(self) -> None:
        if self._committed is not None:
            raise DestinationError(f"feed {self.final_path} is already committed; a new run writes a new file")

    async def commit(self) -> str:
        """Rename the finished feed into place; return ``"wrote <path> (<n> items, <size>)"``."""
        if self._committed is not None:
            return self._committed
        if self._feed.items_written == 0 and self._feed.deletions_written == 0:
            await asyncio.to_thread(self.abandon)
            self._committed = empty_feed_message(self.context.mode)
            return self._committed
        await asyncio.to_thread(self._finish)
        line = f"wrote {self.final_path} ({self._feed.summary()})"
        if self.config.keep_files is not None:
            removed = await asyncio.to_thread(
                prune, self.config.folder, self.config.file_prefix, self.context.job_name, self.config.keep_files
            )
            if removed:
                line += f"; removed {len(removed)} older feed file{'s' if len(removed) != 1 else ''}"
        self._committed = line
        return line

    def _finish(self) -> None:
        try:
            self._feed.close(fsync=True)
            self.part_path.replace(self.final_path)  # os.replace: atomic, and overwrites on Windows too
        except OSError as exc:
            raise DestinationError(
                f"could not finish feed file {self.final_path}: {exc.strerror or exc}; check the folder's free "
                "space and permissions, then run the job again",
                retryable=True,
            ) from None

    def abandon(self) -> None:
        """Remove the unfinished feed (a run that ends without commit leaves nothing)."""
        if self._committed is None:
            try:
                self._feed.discard()
            except OSError as exc:
                log.warning("could not remove unfinished feed file %s: %s", self.part_path, exc.strerror or exc)


@asynccontextmanager
async def open_writer(config: FolderConfig, secrets: NoSecrets, context: WriteContext) -> AsyncIterator[FolderWriter]:
    """Open the run's feed file; leaving without :meth:`FolderWriter.commit` removes it."""
    writer = await asyncio.to_thread(FolderWriter, config, context)
    try:
        yield writer
    finally:
        await asyncio.to_thread(writer.abandon)
