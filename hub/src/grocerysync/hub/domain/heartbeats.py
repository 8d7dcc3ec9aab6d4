"""Agents' heartbeats, written in batches: every poll is a heartbeat, and thousands of agents poll every ~30 s.

A poll only records its heartbeat in memory (:meth:`HeartbeatBuffer.record`, newest wins per agent); a task of
the serving hub writes what was recorded every few seconds (:meth:`HeartbeatBuffer.flush`), and once more when
the hub stops. An agent's ``last_seen_at`` therefore lags by at most the flush interval, far below the seconds
that separate online from stale (``GROCERYSYNC_AGENT_ONLINE_SECONDS``), so the status the API derives from it
stays right.

The flush is hand-written SQL, not tortoise's ``bulk_update``: that builds one ``CASE`` branch per agent and
column in Python, which blocked the event loop for ~0.5 s per 2,000 heartbeats (every held poll waited). On
PostgreSQL one ``UPDATE ... FROM unnest(arrays)`` writes a whole batch; on SQLite one ``UPDATE`` runs for each
agent in a single transaction. Most heartbeats repeat what the agent said last time, so only ``last_seen_at`` is
written for them: the buffer remembers what it last wrote per agent (as compact JSON text), and writes version,
OS, plugins and health only when they changed, or when it last wrote them :data:`REWRITE_SECONDS` ago or more (another
hub process may have written something else for the agent since).

The agent table is tenant-owned; these statements name rows by the agents' own ids, which the polls'
authentication produced, and run on the hub's system connection (see :mod:`grocerysync.hub.rls`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

from tortoise.backends.base.client import BaseDBAsyncClient

from grocerysync.core.wire import Heartbeat
from grocerysync.hub.models import Agent

log = logging.getLogger(__name__)

#: Where the serving app keeps its buffer (``app.extensions``).
EXTENSION = "grocerysync.heartbeats"
#: The agent columns a heartbeat writes.
FIELDS = ("last_seen_at", "version", "os", "plugins", "health")
#: Unchanged details are written again after this long anyway (another process may have written others since).
REWRITE_SECONDS = 300.0

_PG_FULL = (
    "UPDATE agent AS a SET last_seen_at = v.at, version = v.version, os = v.os, "
    "plugins = v.plugins::jsonb, health = v.health::jsonb "
    "FROM unnest($1::int[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[]) "
    "AS v(id, at, version, os, plugins, health) WHERE a.id = v.id"
)
_PG_SEEN = (
    "UPDATE agent AS a SET last_seen_at = v.at FROM unnest($1::int[], $2::timestamptz[]) AS v(id, at) WHERE a.id = v.id"
)
_SQLITE_FULL = "UPDATE agent SET last_seen_at = ?, version = ?, os = ?, plugins = ?, health = ? WHERE id = ?"
_SQLITE_SEEN = "UPDATE agent SET last_seen_at = ? WHERE id = ?"


class Details(NamedTuple):
    """What a heartbeat says about its agent besides "I am here", as stored (JSON as text)."""

    version: str | None
    os: str | None
    plugins: str
    health: str


class Beat(NamedTuple):
    """One recorded heartbeat: when, and its details."""

    at: datetime
    details: Details


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def details_of(heartbeat: Heartbeat) -> Details:
    """The stored form of a heartbeat's details. Identical plugin lists share one string (most agents of a fleet
    run the same plugins), so thousands of buffered heartbeats cost little memory."""
    plugins = sys.intern(_json([p.model_dump(mode="json") for p in heartbeat.plugins]))
    return Details(
        version=heartbeat.agent_version or None,
        os=heartbeat.os or None,
        plugins=plugins,
        health=_json(heartbeat.health.model_dump(mode="json")),
    )


class HeartbeatBuffer:
    """The heartbeats this process received since its last flush, newest per agent."""

    def __init__(self, batch_size: int = 5000, rewrite_seconds: float = REWRITE_SECONDS) -> None:
        self.batch_size = batch_size
        self.rewrite_seconds = rewrite_seconds
        self._pending: dict[int, Beat] = {}
        # Per agent: the details last written, and when (time.monotonic()).
        self._written: dict[int, tuple[Details, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def record(self, agent_id: int, heartbeat: Heartbeat, at: datetime | None = None) -> None:
        """Remember the agent's heartbeat until the next flush (no database work)."""
        self._pending[agent_id] = Beat(at or datetime.now(UTC), details_of(heartbeat))

    async def flush(self) -> int:
        """Write every recorded heartbeat; returns how many there were.

        If the database refuses, the heartbeats go back into the buffer (unless newer ones came meanwhile) for
        the next flush, and the error is raised.
        """
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        now = time.monotonic()
        full: list[tuple[int, Beat]] = []
        seen: list[tuple[int, Beat]] = []
        for agent_id, beat in batch.items():
            written = self._written.get(agent_id)
            fresh = written is not None and written[0] == beat.details and now - written[1] < self.rewrite_seconds
            (seen if fresh else full).append((agent_id, beat))
        try:
            # Agents deleted meanwhile match no row, which is what should happen to their heartbeats.
            db: BaseDBAsyncClient = Agent._meta.db
            for start in range(0, max(len(full), len(seen)), self.batch_size):
                await _write(db, full[start : start + self.batch_size], seen[start : start + self.batch_size])
        except BaseException:
            for agent_id, beat in batch.items():
                self._pending.setdefault(agent_id, beat)
            raise
        for agent_id, beat in full:
            self._written[agent_id] = (beat.details, now)
        return len(batch)

    async def flush_periodically(self, interval: float) -> None:
        """Flush every ``interval`` seconds until cancelled; a failed flush is logged and retried next time."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as exc:
                log.error(
                    "could not write %d agents' heartbeats (their 'last seen' will lag; retrying in %g s): %s",
                    len(self._pending),
                    interval,
                    exc,
                )


async def _write(db: BaseDBAsyncClient, full: list[tuple[int, Beat]], seen: list[tuple[int, Beat]]) -> None:
    """One batch: ``full`` rows get every heartbeat column, ``seen`` rows only ``last_seen_at``."""
    if db.capabilities.dialect == "postgres":
        if full:
            d = [b.details for _, b in full]
            await db.execute_query(
                _PG_FULL,
                [
                    [i for i, _ in full],
                    [b.at for _, b in full],
                    [x.version for x in d],
                    [x.os for x in d],
                    [x.plugins for x in d],
                    [x.health for x in d],
                ],
            )
        if seen:
            await db.execute_query(_PG_SEEN, [[i for i, _ in seen], [b.at for _, b in seen]])
        return
    # SQLite: many small statements in one transaction (execute_many) cost less than one huge one there.
    if full:
        await db.execute_many(_SQLITE_FULL, [[b.at, *b.details, i] for i, b in full])
    if seen:
        await db.execute_many(_SQLITE_SEEN, [[b.at, i] for i, b in seen])


async def flush_quietly(buffer: HeartbeatBuffer) -> None:
    """The last flush when the hub stops: a failure is logged (with what is lost), not raised."""
    try:
        await buffer.flush()
    except Exception as exc:
        log.error("could not write %d agents' last heartbeats while stopping: %s", len(buffer), exc)
