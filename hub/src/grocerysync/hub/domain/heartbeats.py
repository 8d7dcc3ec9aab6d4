"""Agents' heartbeats, written in batches: every poll is a heartbeat, and thousands of agents poll every ~30 s.

A poll only records its heartbeat in memory (:meth:`HeartbeatBuffer.record`, newest wins per agent); a task of
the serving hub writes what was recorded every few seconds in a few ``UPDATE`` statements
(:meth:`HeartbeatBuffer.flush`), and once more when the hub stops. An agent's ``last_seen_at`` therefore lags by
at most the flush interval, far below the seconds that separate online from stale
(``GROCERYSYNC_AGENT_ONLINE_SECONDS``), so the status the API derives from it stays right.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from grocerysync.core.wire import Heartbeat
from grocerysync.hub.models import Agent
from grocerysync.hub.scope import SYSTEM, Scope

log = logging.getLogger(__name__)

#: Where the serving app keeps its buffer (``app.extensions``).
EXTENSION = "grocerysync.heartbeats"
#: The agent columns a heartbeat writes.
FIELDS = ("last_seen_at", "version", "os", "plugins", "health")


@dataclass(frozen=True, slots=True)
class Beat:
    """What one heartbeat says about its agent, as stored."""

    at: datetime
    version: str | None
    os: str | None
    plugins: list[dict[str, Any]]
    health: dict[str, Any]


class HeartbeatBuffer:
    """The heartbeats this process received since its last flush, newest per agent."""

    def __init__(self, batch_size: int = 500) -> None:
        self.batch_size = batch_size
        self._pending: dict[int, Beat] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def record(self, agent_id: int, heartbeat: Heartbeat, at: datetime | None = None) -> None:
        """Remember the agent's heartbeat until the next flush (no database work)."""
        self._pending[agent_id] = Beat(
            at=at or datetime.now(UTC),
            version=heartbeat.agent_version or None,
            os=heartbeat.os or None,
            plugins=[p.model_dump(mode="json") for p in heartbeat.plugins],
            health=heartbeat.health.model_dump(mode="json"),
        )

    async def flush(self) -> int:
        """Write every recorded heartbeat (one ``UPDATE`` per batch); returns how many there were.

        If the database refuses, the heartbeats go back into the buffer (unless newer ones came meanwhile) for
        the next flush, and the error is raised.
        """
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        rows = [
            Agent(id=agent_id, last_seen_at=b.at, version=b.version, os=b.os, plugins=b.plugins, health=b.health)
            for agent_id, b in batch.items()
        ]
        try:
            # Agents deleted meanwhile match no row, which is what should happen to their heartbeats.
            await Scope(SYSTEM).query(Agent).bulk_update(rows, fields=FIELDS, batch_size=self.batch_size)
        except BaseException:
            for agent_id, beat in batch.items():
                self._pending.setdefault(agent_id, beat)
            raise
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


async def flush_quietly(buffer: HeartbeatBuffer) -> None:
    """The last flush when the hub stops: a failure is logged (with what is lost), not raised."""
    try:
        await buffer.flush()
    except Exception as exc:
        log.error("could not write %d agents' last heartbeats while stopping: %s", len(buffer), exc)
