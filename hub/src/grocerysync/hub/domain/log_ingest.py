"""Agents' log records (``POST /agent/v1/logs``): read a shipped batch, store each record exactly once, fast.

A batch is stored in one transaction. Every record is filed under the shipping agent's own retailer, store and
agent id, whatever the record says; its ``run_id`` is linked only when that run is of the agent's store. A run id
of any other store (another tenant's, a purged run, a typo) is not linked: the record is stored with no run and
the id it named is kept in ``extra["unlinked_run_id"]``. The batch is accepted rather than refused because the
agent re-sends a refused batch until it gives up, and the other records of the batch are worth keeping.

Exactly once: each record carries the agent's UUID (``uid``, unique in ``log_entry``); a record whose uid is
already stored, or appears twice in the batch, is counted as a duplicate and not stored again. Two hub processes
storing the same batch at once store it once (the unique index decides).

On PostgreSQL the records go in with COPY (binary) into a temporary table, then one
``INSERT ... SELECT ... ON CONFLICT (uid) DO NOTHING``: no statement per record. On SQLite, one multi-row insert of
the records whose uid is not stored yet, in one transaction (SQLite transactions are exclusive in the process).

A record that does not match :class:`~grocerysync.core.wire.LogRecord` (e.g. from an agent newer than the hub)
does not cost the rest of the batch: it is stored as a warning of the hub naming what was wrong, with the record
itself in ``extra["record"]``. Only a body that is not a batch at all is refused (422).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from pydantic import ValidationError

from grocerysync.core.config import field_errors
from grocerysync.core.wire import MAX_BATCH, LogBatch, LogRecord, Receipt
from grocerysync.hub.db import transaction
from grocerysync.hub.errors import Invalid
from grocerysync.hub.models import Agent, LogEntry, Run
from grocerysync.hub.schemas_jobs import LEVELS
from grocerysync.hub.scope import SYSTEM, Scope

#: A record dated further ahead of the hub's clock than this is stored at the time it arrived, with the agent's
#: time in ``extra["agent_at"]``: otherwise a store with a clock set years ahead would pin its lines to the top of
#: every listing and keep them past any retention.
FUTURE_TOLERANCE = timedelta(hours=1)
#: Where a record's run id is kept when that run is not of the agent's store.
UNLINKED_RUN_KEY = "unlinked_run_id"
#: Where a future-dated record's own time is kept.
AGENT_AT_KEY = "agent_at"
#: The logger name of the entries the hub writes for records it could not read.
HUB_LOGGER = "grocerysync.hub.log_ingest"
#: How deep a record's ``extra`` is kept; deeper values are stored as their text.
_MAX_DEPTH = 64
_MAX_ID = 2_147_483_647
_INT64 = 2**63

# PostgreSQL: the temporary table COPY fills, then one statement moves its rows into log_entry. A record whose uid
# is stored already, or comes twice in the batch, is skipped by ON CONFLICT. Rows go in the order COPY wrote them
# (a sequential scan of a new temporary table), so records of one time list in the order the agent logged them.
_PG_COLUMNS = (
    "uid",
    "retailer_id",
    "store_id",
    "agent_id",
    "run_id",
    "at",
    "level",
    "levelno",
    "logger",
    "message",
    "extra",
)
_PG_TEMP = "grocerysync_log_batch"
_PG_CREATE = (
    "CREATE TEMPORARY TABLE grocerysync_log_batch (uid uuid, retailer_id integer, store_id integer, "
    "agent_id integer, run_id integer, at timestamptz, level varchar(10), levelno integer, logger varchar(200), "
    "message text, extra jsonb) ON COMMIT DROP"
)
_PG_MOVE = (
    "INSERT INTO log_entry (uid, retailer_id, store_id, agent_id, run_id, at, level, levelno, logger, message, extra) "
    "SELECT uid, retailer_id, store_id, agent_id, run_id, at, level, levelno, logger, message, extra "
    "FROM grocerysync_log_batch ON CONFLICT (uid) DO NOTHING"
)
# The runs a batch names that are the agent's store's, locked against deletion until the batch is stored (a run
# purged in between would otherwise fail the insert on its foreign key).
_PG_OWN_RUNS = (
    "SELECT id FROM run WHERE id = ANY($1::integer[]) AND retailer_id = $2 AND store_id = $3 ORDER BY id FOR KEY SHARE"
)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record of a batch that does not match the wire model: what was wrong, and the record as it came."""

    index: int
    uid: UUID | None
    problem: str
    record: Any


@dataclass(slots=True)
class ShippedBatch:
    """A batch as read from the agent's body: the records that match the wire model, and those that do not."""

    records: list[LogRecord] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records) + len(self.unreadable)


def parse_batch(raw: bytes) -> ShippedBatch:
    """Read a ``LogBatch`` body; Invalid (422, naming what is wrong) when it is not a batch at all.

    The usual body is validated straight from its bytes; only a body with a bad record takes the slow path that
    reads the records one by one (and accepts what the strict JSON reader does not: lone surrogates, which the
    hub replaces).
    """
    try:
        return ShippedBatch(records=LogBatch.model_validate_json(raw).records)
    except ValidationError:
        pass
    try:
        body = json.loads(raw)
    except RecursionError:
        raise Invalid("the log batch is nested too deeply to read: keep each record's fields shallow") from None
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise Invalid(f'the log batch is not valid JSON{where}: send a JSON object {{"records": [...]}}') from None
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list):
        message = 'the log batch must be a JSON object with a list "records" of log records'
        raise Invalid(message, [{"field": "records", "message": message}])
    if len(records) > MAX_BATCH:
        message = f"the log batch has {len(records)} records; send at most {MAX_BATCH} per request"
        raise Invalid(message, [{"field": "records", "message": message}])
    batch = ShippedBatch()
    for index, item in enumerate(records):
        item = _clean(item, -1)  # -1: the depth counts from the record's fields, as on the fast path
        try:
            batch.records.append(LogRecord.model_validate(item))
        except ValidationError as exc:
            problem = "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(exc))
            batch.unreadable.append(Unreadable(index, _uid_of(item), problem, item))
    return batch


async def ingest(agent: Agent, batch: ShippedBatch, *, now: datetime | None = None) -> Receipt:
    """Store a batch of ``agent``'s log records under its retailer, store and agent; count new vs duplicates."""
    if not len(batch):
        return Receipt()
    now = now or datetime.now(UTC)
    client = LogEntry._meta.db
    if client.capabilities.dialect == "postgres":
        recorded = await _store_postgres(agent, batch, now, client.connection_name)
    else:
        recorded = await _store_orm(agent, batch, now, client.connection_name)
    return Receipt(recorded=recorded, duplicates=len(batch) - recorded)


#: A record as stored: at, level, logger, message, run_id, extra.
_Stored = tuple[datetime, str, str, str, int | None, dict[str, Any]]


def _as_stored(record: LogRecord, now: datetime, own_runs: set[int]) -> _Stored:
    """What is stored of a record: its time in UTC (or ``now`` if far ahead), no NUL, its run only if the store's."""
    at, logger, message, run_id, extra = record.at, record.logger, record.message, record.run_id, record.extra
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # the wire's times are UTC; a naive one was meant as such
    if at > now + FUTURE_TOLERANCE:
        extra = {**extra, AGENT_AT_KEY: at.isoformat()}
        at = now
    if "\x00" in message or "\x00" in logger:
        # PostgreSQL text cannot hold NUL: stored as U+FFFD on both databases, so they list alike.
        message, logger = message.replace("\x00", "\ufffd"), logger.replace("\x00", "\ufffd")
    if run_id is not None and run_id not in own_runs:
        extra = {**extra, UNLINKED_RUN_KEY: run_id}
        run_id = None
    return at, record.level, logger, message, run_id, extra


def _unreadable_as_stored(agent: Agent, bad: Unreadable, now: datetime) -> _Stored:
    message = (
        f"agent {agent.id} sent a log record the hub could not read (record {bad.index} of its batch: "
        f"{bad.problem}); the record is kept in this entry's fields as 'record'"
    )
    return now, "warning", HUB_LOGGER, message, None, {"record": bad.record}


def _run_ids(batch: ShippedBatch) -> list[int]:
    # Ids no run can have (the columns are 32-bit) are simply never the agent's.
    return sorted({r.run_id for r in batch.records if r.run_id is not None and 0 < r.run_id <= _MAX_ID})


async def _store_postgres(agent: Agent, batch: ShippedBatch, now: datetime, connection_name: str) -> int:
    ids = (agent.retailer_id, agent.store_id, agent.id)
    latest = now + FUTURE_TOLERANCE
    async with transaction(connection_name) as tx, tx.acquire_connection() as conn:
        wanted = _run_ids(batch)
        own = {r["id"] for r in await conn.fetch(_PG_OWN_RUNS, wanted, *ids[:2])} if wanted else set()
        # The hot loop of the route: a record that needs nothing changed (nearly all) is copied as it came; its
        # duplicates in the batch, or of stored records, are skipped by ON CONFLICT.
        records: list[tuple[Any, ...]] = []
        for r in batch.records:
            at, run_id = r.at, r.run_id
            if (
                at.tzinfo is None
                or at > latest
                or (run_id is not None and run_id not in own)
                or "\x00" in r.message
                or "\x00" in r.logger
            ):
                at, level, logger, message, run_id, extra = _as_stored(r, now, own)
            else:
                level, logger, message, extra = r.level, r.logger, r.message, r.extra
            records.append((r.uid, *ids, run_id, at, level, LEVELS[level], logger, message, _json_text(extra)))
        for bad in batch.unreadable:
            at, level, logger, message, run_id, extra = _unreadable_as_stored(agent, bad, now)
            records.append((bad.uid, *ids, run_id, at, level, LEVELS[level], logger, message, _json_text(extra)))
        await conn.execute(_PG_CREATE)
        await conn.copy_records_to_table(_PG_TEMP, columns=_PG_COLUMNS, records=records)
        status: str = await conn.execute(_PG_MOVE)
    return int(status.rsplit(" ", 1)[-1])


async def _store_orm(agent: Agent, batch: ShippedBatch, now: datetime, connection_name: str) -> int:
    scope = Scope(SYSTEM)
    async with transaction(connection_name):
        wanted = _run_ids(batch)
        own: set[int] = set()
        if wanted:
            found = scope.query(Run).filter(id__in=wanted, retailer_id=agent.retailer_id, store_id=agent.store_id)
            own = {int(i) for i in await found.values_list("id", flat=True)}  # type: ignore[call-overload]  # values_list(flat=True) is typed as tuples
        rows: list[tuple[UUID | None, _Stored]] = [(r.uid, _as_stored(r, now, own)) for r in batch.records]
        rows += [(bad.uid, _unreadable_as_stored(agent, bad, now)) for bad in batch.unreadable]
        uids = [uid for uid, _ in rows if uid is not None]
        stored = await scope.query(LogEntry).filter(uid__in=uids).values_list("uid", flat=True) if uids else []
        # Skipped: records stored before, and a record's second copy in this batch.
        seen = {UUID(str(u)) for u in stored}
        new = []
        for uid, (at, level, logger, message, run_id, extra) in rows:
            if uid is not None:
                if uid in seen:
                    continue
                seen.add(uid)
            new.append(
                LogEntry(
                    uid=uid,
                    retailer_id=agent.retailer_id,
                    store_id=agent.store_id,
                    agent_id=agent.id,
                    run_id=run_id,
                    at=at,
                    level=level,
                    levelno=LEVELS[level],
                    logger=logger,
                    message=message,
                    extra=orjson.loads(_json_text(extra)),
                )
            )
        if new:
            await LogEntry.bulk_create(new)
    return len(new)


def _json_text(extra: dict[str, Any]) -> str:
    """``extra`` as JSON that PostgreSQL's jsonb takes: no NUL characters, no NaN, no integers beyond 64 bits."""
    try:
        text = orjson.dumps(extra)
    except (orjson.JSONEncodeError, TypeError):
        text = orjson.dumps(_clean(extra))
    if b"\\u0000" in text:
        text = orjson.dumps(_clean(extra))
    return text.decode()


def _clean(value: Any, depth: int = 0) -> Any:
    """A JSON value with what the databases cannot store replaced: NUL and lone surrogates in text (U+FFFD),
    NaN and infinities (null), integers beyond 64 bits and values nested too deep (their text)."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        try:
            return _clean_text(json.dumps(value)[:10_000])
        except (RecursionError, ValueError):
            return "(nested too deeply to keep)"
    if isinstance(value, dict):
        return {_clean_text(str(k)): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    return _clean_text(str(value))


def _clean_text(text: str) -> str:
    # Round-tripping through UTF-16 pairs surrogates that belong together and replaces the lone ones.
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text.replace("\x00", "\ufffd")


def _uid_of(item: Any) -> UUID | None:
    try:
        return UUID(str(item["uid"]))
    except (KeyError, TypeError, ValueError):
        return None
