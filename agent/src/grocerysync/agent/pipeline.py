"""The export pipeline: POS batches -> delta check -> validation -> mapping, filters and transforms ->
destination writes (with retries) -> removals -> commit -> delta store update.

:func:`run_export` is the one code path for both the ``grocerysync-agent export`` command and the runs
the hub dispatches. It never raises for an expected problem: the returned :class:`RunSummary` says what
failed and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import operator
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

from grocerysync.agent import paths
from grocerysync.agent.fingerprint import job_fingerprint, record_hashes
from grocerysync.agent.mapping import ItemShaper
from grocerysync.agent.sending import PreviewWriter, send_with_retry
from grocerysync.agent.state import FILTERED, StateStore
from grocerysync.agent.summary import Problems, Progress, RunSummary
from grocerysync.core.config import parse_config
from grocerysync.core.errors import DestinationError, GrocerySyncError, PluginError, SourceError
from grocerysync.core.items import Item
from grocerysync.core.jobs import JobSpec
from grocerysync.core.manager import PluginManager
from grocerysync.core.records import Destination, DestinationWriter, PosConnector, ReadRequest, WriteContext
from grocerysync.core.results import RawBatch, RawRecord, Rejection
from grocerysync.core.validation import validate_records

log = logging.getLogger(__name__)

#: Records asked of the POS connector at a time, at most: the job's batch_size is what the destination is sent
#: at a time, and items wait in the buffer until there are that many. Reading in smaller batches keeps fewer raw
#: records in memory at once (a batch being worked on and the next one being read): 250 rather than 500 took
#: 0.6 MB off a 200,000-item export's peak for about 2% in speed.
READ_BATCH = 250
ProgressCallback = Callable[[Progress], None]
Transform = Callable[[list[Item]], list[Item]]


class _Cancelled(Exception):
    """Raised between batches when the run's cancel event is set; never leaves :func:`run_export`."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """A job with its plugins looked up and every plugin configuration validated."""

    connector: PosConnector
    source_config: Any
    destination: Destination
    destination_config: Any
    destination_secrets: Any
    transforms: list[tuple[str, Transform]]


def resolve(job: JobSpec, plugins: PluginManager) -> _Plan:
    """Look up the job's plugins and validate their configurations; raise before anything is read.

    Raises PluginError for a plugin that is not installed and ConfigError naming each bad field.
    """
    connector = plugins.pos_connector(job.source.plugin)
    destination = plugins.destination(job.destination.plugin)
    source_config = parse_config(connector.config_model, job.source.config, where="source.config")
    destination_config = parse_config(destination.config_model, job.destination.config, where="destination.config")
    secrets = parse_config(destination.secrets_model, job.destination.secret_values(), where="destination.secrets")
    transforms: list[tuple[str, Transform]] = []
    for index, spec in enumerate(job.transforms):
        record = plugins.transform(spec.plugin)
        config = parse_config(record.config_model, spec.config, where=f"transforms[{index}].config")
        try:
            transforms.append((spec.plugin, record.build(config)))
        except GrocerySyncError:
            raise
        except Exception as exc:
            raise PluginError(
                f"transform {spec.plugin!r} ({record.plugin}) could not be set up: {type(exc).__name__}: {exc}"
            ) from exc
    return _Plan(connector, source_config, destination, destination_config, secrets, transforms)


@contextlib.contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """Collect cyclic garbage less often while an export runs.

    An export makes a few dozen short-lived objects per item and almost no reference cycles, so the
    default threshold (a young-generation pass every 700 allocations) spends a tenth of the run
    scanning objects that plain reference counting frees anyway. Memory stays bounded: cycles are
    still collected, only in larger steps.
    """
    before = gc.get_threshold()
    gc.set_threshold(50_000, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextlib.contextmanager
def _leftover_tasks_in_one_line() -> Iterator[None]:
    """While an export runs, report a task that failed and was dropped unread in one line, not a traceback.

    Libraries that plugins use leave such tasks behind when a connection drops: asyncssh's parallel SFTP
    writes, when the upload they belong to fails, end with "connection lost" errors nobody reads, and asyncio
    prints each as "Task exception was never retrieved" with a traceback. The failure itself reaches the run
    (its retries and its summary say what happened); the leftovers are noise in the agent's log.

    The handler is the event loop's, set for the run and put back after it: the agent gives every export a loop
    of its own (``asyncio.run`` in the CLI and in each run's thread).
    """
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        task = context.get("future")
        if exc is None or context.get("message") != "Task exception was never retrieved" or task is None:
            if previous is None:
                loop.default_exception_handler(context)
            else:
                previous(loop, context)
            return
        coro = getattr(task, "get_coro", lambda: None)()
        where = getattr(coro, "__qualname__", None) or type(task).__name__
        log.info(
            "a background task (%s) ended with %s: %s, which its caller did not collect", where, type(exc).__name__, exc
        )
        log.debug("the error of background task %s", where, exc_info=exc)  # for --debug

    loop.set_exception_handler(handler)
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


async def run_export(
    job: JobSpec,
    *,
    plugins: PluginManager,
    state_dir: Path,
    run_id: str | None = None,
    full: bool = False,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    retry_delay: float = 0.5,
    cancel: threading.Event | None = None,
) -> RunSummary:
    """Run one export and return its summary (status ``succeeded``, ``partially_failed``, ``failed`` or
    ``cancelled``).

    ``full`` (or ``job.options.mode == "full"``) re-sends every item and refreshes the delta store;
    ``dry_run`` (or ``job.options.dry_run``) sends nothing, leaves the store untouched and writes what it
    would send to a preview file. ``retry_delay`` is the first backoff delay in seconds.

    ``cancel`` (set from any thread) stops the run after the batch it is working on: nothing is committed
    and the delta store is left as it was, so the next run sends those items again (writes are upserts).
    """
    started = time.perf_counter()
    full = full or job.options.mode == "full"
    dry_run = dry_run or job.options.dry_run
    summary = RunSummary(
        job=job.name,
        run_id=run_id or paths.new_run_id(),
        mode="full" if full else "delta",
        dry_run=dry_run,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    log.info("export %r run %s started (%s%s)", job.name, summary.run_id, summary.mode, ", dry run" if dry_run else "")
    try:
        plan = resolve(job, plugins)
        with _fewer_gc_passes(), _leftover_tasks_in_one_line():
            await _Run(job, plan, summary, state_dir, full, progress, retry_delay, cancel).execute()
    except _Cancelled:
        summary.status = "cancelled"
        summary.error = (
            f"cancelled after {summary.read} items were read; nothing was committed and the delta state was "
            "not updated, so the next run sends these items again"
        )
        log.warning("export %r run %s cancelled", job.name, summary.run_id)
    except GrocerySyncError as exc:
        summary.status = "failed"
        summary.error = str(exc)
        summary.exception = exc
    except Exception as exc:
        # A defect, not a user error: report it in the summary; the CLI's --debug shows the traceback.
        summary.status = "failed"
        summary.error = f"internal error: {type(exc).__name__}: {exc}"
        summary.exception = exc
        log.exception("export %r run %s crashed", job.name, summary.run_id)
    duration = time.perf_counter() - started
    summary.duration_s = round(duration, 3)
    summary.items_per_s = round(summary.read / duration, 1) if duration > 0 else 0.0
    if progress is not None:
        progress(summary.progress("done"))
    log.info(
        "export %r run %s %s: read %d, sent %d, unchanged %d, rejected %d, failed %d, removed %d",
        job.name, summary.run_id, summary.status, summary.read, summary.sent, summary.unchanged,
        summary.rejected, summary.failed, summary.removed,
    )  # fmt: skip
    return summary


class _Run:
    """One run's moving parts; :meth:`execute` is the pipeline."""

    def __init__(
        self,
        job: JobSpec,
        plan: _Plan,
        summary: RunSummary,
        state_dir: Path,
        full: bool,
        progress: ProgressCallback | None,
        retry_delay: float,
        cancel: threading.Event | None = None,
    ) -> None:
        self.job = job
        self.cancel = cancel
        self.plan = plan
        self.summary = summary
        self.full = full
        self.progress = progress
        self.retry_delay = retry_delay
        self.options = job.options
        self.state_path = paths.job_dir(state_dir, job.name) / "state.sqlite"
        self.run_dir = paths.run_dir(state_dir, job.name, summary.run_id)
        summary.run_dir = str(self.run_dir)
        self.problems = Problems(summary, self.run_dir)
        self.shaper = ItemShaper(job.mapping, job.filters)
        self.guard_tripped = False
        # Items waiting for the destination, gathered across POS batches so that a run where few items
        # changed still writes full batches.
        self.buffer: list[Item] = []
        self.buffer_hashes: dict[str, str] = {}
        self.buffer_refs: dict[str, str] = {}

    async def execute(self) -> None:
        summary, plan = self.summary, self.plan
        fingerprint = job_fingerprint(self.job)
        with StateStore(self.state_path, read_only=summary.dry_run, job_name=self.job.name) as state:
            self.state = state
            stored = state.get_meta("fingerprint")
            refresh = self.full or stored != fingerprint
            if stored is not None and stored != fingerprint and not self.full:
                summary.warnings.append(
                    "the job's mapping, filters, transforms or destination changed since the last run: "
                    "every item is sent again"
                )
            cursor = state.get_meta("cursor") if plan.connector.supports_incremental and not refresh else None
            self.refresh = refresh
            try:
                async with AsyncExitStack() as stack:
                    writer = await self._open(stack)
                    last_cursor = await self._read_and_send(
                        writer, ReadRequest(min(self.options.batch_size, READ_BATCH), cursor)
                    )
                    if cursor is None:  # only a full read shows what is gone
                        await self._removals(writer)
                    self._check_cancel()
                    self._report("committing")
                    if not summary.dry_run:
                        # Merged before the destination commits, so that a store that cannot take it fails the
                        # run while the destination can still discard what it staged; committed only once the
                        # destination has (closing the store rolls the merge back otherwise). The merge runs on
                        # this thread: a thread of its own for it cost more memory than the time it saved.
                        keep_cursor = last_cursor if plan.connector.supports_incremental else None
                        state.merge_run(fingerprint=fingerprint, cursor=keep_cursor, refresh=refresh)
                    summary.commit = await self._call(writer.commit, "commit")
                if not summary.dry_run:
                    state.finish_run()
            finally:
                self.problems.close()
        if summary.failed and not (summary.sent or summary.removed or summary.unchanged):
            summary.status = "failed"
            summary.error = f"the destination accepted none of the {summary.failed} items sent; see the failures"
        elif summary.failed or summary.rejected or self.guard_tripped:
            summary.status = "partially_failed"
        else:
            summary.status = "succeeded"

    async def _open(self, stack: AsyncExitStack) -> DestinationWriter:
        summary = self.summary
        if summary.dry_run:
            preview = PreviewWriter(self.run_dir / "preview.jsonl")
            stack.callback(preview.close)
            summary.preview_path = str(preview.path)
            return preview
        plan = self.plan
        work = paths.ensure_private_dir(self.run_dir / "work")
        context = WriteContext(self.job.name, summary.run_id, "full" if self.full else "delta", str(work))
        name = plan.destination.name
        try:
            manager = plan.destination.open(plan.destination_config, plan.destination_secrets, context)
            writer: DestinationWriter = await stack.enter_async_context(manager)
        except GrocerySyncError:
            raise
        except Exception as exc:
            raise DestinationError(
                f"destination {name!r} could not be opened: {type(exc).__name__}: {exc}; check that it is "
                "reachable and its settings are right (try the plugin's check)"
            ) from exc
        return writer

    async def _call(self, fn: Callable[[], Any], what: str) -> Any:
        name = self.plan.destination.name
        try:
            return await fn()
        except GrocerySyncError:
            raise
        except Exception as exc:
            raise DestinationError(f"destination {name!r} failed at {what}: {type(exc).__name__}: {exc}") from exc

    def _report(self, phase: Any) -> None:
        if self.progress is not None:
            self.progress(self.summary.progress(phase))

    def _check_cancel(self) -> None:
        # Raised inside the destination's context: its writer sees the exception and discards what it staged.
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled

    # -- reading ---------------------------------------------------------------------------

    async def _batches(self, request: ReadRequest) -> AsyncIterator[RawBatch]:
        """The connector's batches, with the next one always being read while this one is processed.

        Connectors wait on files, databases and networks; asking for batch N+1 before working on batch N
        lets that waiting (and the parts of SQLite and file I/O that run without the GIL) overlap with
        validation and sending. Only one read is ever in flight, so memory stays at two batches.
        """
        connector = self.plan.connector
        iterator = aiter(connector.read(self.plan.source_config, request))

        async def next_batch() -> RawBatch | None:
            try:
                return await anext(iterator)
            except StopAsyncIteration:
                return None
            except GrocerySyncError:
                raise
            except Exception as exc:
                raise SourceError(
                    f"POS connector {connector.name!r} failed while reading: {type(exc).__name__}: {exc}"
                ) from exc

        pending: asyncio.Future[RawBatch | None] = asyncio.ensure_future(next_batch())
        try:
            while (batch := await pending) is not None:
                pending = asyncio.ensure_future(next_batch())
                await asyncio.sleep(0)  # let the read start before this batch's work takes the loop
                yield batch
                batch = None  # done with: not kept while the next one is awaited
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, GrocerySyncError):
                    await pending
            elif not pending.cancelled():
                # The run stopped for another reason while the next read had already failed: the stop is what
                # is reported; reading the read's error here keeps asyncio from printing it at exit.
                pending.exception()
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    async def _read_and_send(self, writer: DestinationWriter, request: ReadRequest) -> str | None:
        last_cursor: str | None = None
        seq = 0
        async for batch in self._batches(request):
            if batch.cursor is not None:
                last_cursor = batch.cursor
            seq = await self._take(writer, batch, seq)
            del batch  # its raw records are done with: let them go before the next batch is awaited
            self._report("reading")
            self._check_cancel()
        await self._flush(writer, final=True)
        return last_cursor

    async def _take(self, writer: DestinationWriter, batch: RawBatch, seq: int) -> int:
        """One batch from the connector: key, delta check, then validate and buffer what changed.

        ``seq`` counts the records keyed so far (the store numbers them); returns the new count.
        """
        summary, state, problems = self.summary, self.state, self.problems
        if batch.rejected:
            summary.read += len(batch.rejected)
            problems.reject(batch.rejected)
        summary.read += len(batch.records)
        by_key, unkeyed, duplicates = _keyed(batch.records)
        earlier = state.mark_seen(seq + 1, list(by_key), list(map(_REF, by_key.values())))
        known = None if self.refresh else state.lookup(list(by_key))
        seq += len(by_key)
        hashes = record_hashes(by_key)
        for key, earlier_ref in earlier.items():
            duplicates.append(_duplicate(by_key.pop(key), key, earlier_ref))
            del hashes[key]
        if duplicates:
            problems.reject(duplicates)
        if known is not None:
            changed_by_key: dict[str, RawRecord] = {}
            unchanged = 0
            for key, digest in hashes.items():
                stored = known.get(key)
                if stored == digest:
                    unchanged += 1
                elif stored is not None and stored == FILTERED + digest:
                    summary.filtered += 1  # known to be filtered out, and still the same
                else:
                    changed_by_key[key] = by_key[key]
            summary.unchanged += unchanged
            by_key = changed_by_key
            hashes = {key: hashes[key] for key in by_key}
        changed = list(by_key.values())
        if unkeyed:
            changed.extend(unkeyed)
        if changed:
            await self._process(writer, changed, by_key, hashes)
        return seq

    async def _process(
        self,
        writer: DestinationWriter,
        changed: list[RawRecord],
        by_key: dict[str, RawRecord],
        hashes: dict[str, str],
    ) -> None:
        """Validate, shape and buffer ``changed``: the records of ``by_key`` (each with its hash in ``hashes``)
        and any records without a key."""
        items, rejections = validate_records(changed)
        if rejections:
            self.problems.reject(rejections)
        kept, dropped, failed = self.shaper.apply(items)
        if failed:
            self.problems.reject(
                [Rejection(by_key[i.item_id].ref, why, "map", i.item_id) for i, why in failed if i.item_id in by_key]
            )
        for name, transform in self.plan.transforms:
            if not kept:
                break
            before = kept
            try:
                kept = list(transform(kept))
            except GrocerySyncError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"transform {name!r} failed on a batch: {type(exc).__name__}: {exc}; fix it or remove it "
                    "from the job's transforms"
                ) from exc
            if len(kept) != len(before):
                left = {i.item_id for i in kept}
                dropped.extend(i for i in before if i.item_id not in left)
        if dropped:
            self.summary.filtered += len(dropped)
            keys = [i.item_id for i in dropped if i.item_id in hashes]
            self.state.mark_dropped(keys)
            self.state.stage([(k, FILTERED + hashes[k]) for k in keys], False)
        if self.plan.destination.spools:
            # A destination that spools takes each batch as it comes: holding items back to make full batches
            # would only cost memory (a validated item is about 2 KB).
            size = self.options.batch_size
            for start in range(0, len(kept), size):
                await self._send(writer, kept[start : start + size], hashes.get, partial(_ref_of, by_key))
            return
        # What a write's outcome needs, for the items waiting in the buffer: each one's hash (staged when the
        # destination accepts it) and ref (named when it refuses it), not the raw record, which can go now.
        self.buffer_hashes.update(hashes)
        self.buffer_refs.update(zip(by_key, map(_REF, by_key.values()), strict=True))
        self.buffer.extend(kept)
        if len(self.buffer) >= self.options.batch_size:
            await self._flush(writer)

    async def _flush(self, writer: DestinationWriter, *, final: bool = False) -> None:
        """Send the buffer's whole batches (``final``: everything) to the destination."""
        size = self.options.batch_size
        hashes, refs = self.buffer_hashes, self.buffer_refs
        while len(self.buffer) >= size or (final and self.buffer):
            batch, self.buffer = self.buffer[:size], self.buffer[size:]
            await self._send(writer, batch, hashes.get, refs.get)
        if self.buffer:  # less than a batch waits for the next items: keep only what it needs
            waiting = [item.item_id for item in self.buffer]
            self.buffer_hashes = {k: hashes[k] for k in waiting if k in hashes}
            self.buffer_refs = {k: refs[k] for k in waiting if k in refs}
        else:
            hashes.clear()
            refs.clear()

    async def _send(
        self,
        writer: DestinationWriter,
        batch: list[Item],
        hash_of: Callable[[str], str | None],
        ref_of: Callable[[str], str | None],
    ) -> None:
        """Write one batch; stage the hashes of what the destination accepted and report what it refused, by the
        ref of its record (``ref_of`` is asked only for those)."""
        ok, failed = await send_with_retry(
            writer.write,
            batch,
            _item_key,
            what=f"destination {self.plan.destination.name!r} write",
            max_attempts=self.options.max_attempts,
            base_delay=self.retry_delay,
        )
        self.summary.sent += len(ok)
        # An item a transform added has no record and no hash: it is sent every run.
        digests = list(map(hash_of, ok))
        if None in digests:
            self.state.stage([(k, d) for k, d in zip(ok, digests, strict=True) if d is not None], True)
        else:
            self.state.stage(zip(ok, cast(list[str], digests), strict=True), True)
        for key, error in failed:
            self.problems.fail(ref_of(key) or f"item {key}", key, "write", error)

    # -- removals ----------------------------------------------------------------------------

    async def _removals(self, writer: DestinationWriter) -> None:
        summary, state, options = self.summary, self.state, self.options
        candidates = state.count_removals()
        if not candidates:
            return
        destination = self.plan.destination
        if not options.send_removals:
            summary.removals_skipped = f"{candidates} items are gone from the POS, but the job has send_removals off"
            return
        if not destination.supports_delete:
            summary.removals_skipped = (
                f"{candidates} items are gone from the POS, but destination {destination.name!r} cannot delete "
                "items; remove them on the platform by hand"
            )
            return
        known = state.count_known()
        ratio = candidates / known if known else 1.0
        if ratio > options.max_removal_ratio:
            self.guard_tripped = True
            summary.removals_skipped = (
                f"refused to remove {candidates} of the {known} items online ({ratio:.0%}), more than the job's "
                f"limit of {options.max_removal_ratio:.0%}: the POS export may be empty or truncated. Check the "
                "POS export; if these items really are gone, raise options.max_removal_ratio for one run"
            )
            summary.warnings.append(summary.removals_skipped)
            return
        self._report("removing")
        for keys in state.iter_removals(options.batch_size):
            ok, failed = await send_with_retry(
                writer.delete,
                keys,
                str,
                what=f"destination {destination.name!r} delete",
                max_attempts=options.max_attempts,
                base_delay=self.retry_delay,
            )
            state.stage_removed(ok)
            summary.removed += len(ok)
            for key, error in failed:
                self.problems.fail(f"removal of item {key}", key, "delete", error)
            self._report("removing")
            self._check_cancel()


_item_key: Callable[[Item], str] = operator.attrgetter("item_id")


_REF = operator.attrgetter("ref")


def _ref_of(records: dict[str, RawRecord], key: str) -> str | None:
    record = records.get(key)
    return None if record is None else record.ref


_DATA = operator.attrgetter("data")
_ITEM_ID = operator.methodcaller("get", "item_id")


def _keyed(records: list[RawRecord]) -> tuple[dict[str, RawRecord], list[RawRecord], list[Rejection]]:
    """Key each record by its stripped ``item_id``: ``(by key, records without one, duplicates)``.

    The later of two records with one key is a duplicate, its rejection naming both. The common case (text
    keys, all present and distinct) is worked out by builtins over the whole batch.
    """
    ids = list(map(_ITEM_ID, map(_DATA, records)))
    if set(map(type, ids)) == {str}:
        keys = list(map(str.strip, cast(list[str], ids)))
        by_key = dict(zip(keys, records, strict=True))
        if len(by_key) == len(records) and "" not in by_key:
            return by_key, [], []
    by_key = {}
    unkeyed: list[RawRecord] = []
    duplicates: list[Rejection] = []
    for record, raw in zip(records, ids, strict=True):
        key = raw.strip() if isinstance(raw, str) else None if raw is None else str(raw).strip()
        if not key:
            unkeyed.append(record)  # validation rejects it, saying item_id is missing
        elif key in by_key:
            duplicates.append(_duplicate(record, key, by_key[key].ref))
        else:
            by_key[key] = record
    return by_key, unkeyed, duplicates


def _duplicate(record: RawRecord, key: str, first_ref: str) -> Rejection:
    return Rejection(
        ref=record.ref,
        reason=(
            f"duplicate item_id {key!r}: {first_ref} already has it, so this row is skipped; "
            "fix the POS export so that each item appears once"
        ),
        stage="read",
        item_id=key,
    )
