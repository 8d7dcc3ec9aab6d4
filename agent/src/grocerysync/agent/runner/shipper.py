"""Sends what waits in the spool to the hub, oldest first, and deletes each entry only once the hub has it.

Log records go to ``POST /agent/v1/logs`` in batches (at most :data:`~grocerysync.core.wire.MAX_BATCH`
records and :data:`~.reports.MAX_BODY_BYTES` bytes); run reports and command results go to their own routes,
one at a time and in spool order, so a run's rejections always arrive before its result.

What the hub answers decides what happens to the entries:

- 2xx: confirmed, deleted from the spool.
- 404, 409, 410: the hub no longer expects this report (the run was handed to another attempt, the command
  is gone): a warning, and the entry is dropped.
- 413: too large: a log batch is split and sent again; a single report that large is dropped with an error.
- 403 (a proxy refusing), and 404 for log records (a hub without the log route): kept and sent again after a
  backoff, with one error line, since someone can fix that and the records would otherwise be lost.
- 400, 422 and other 4xx: the hub will never accept this entry: an error line with the hub's message, and
  it is dropped, so one bad entry cannot hold up everything behind it.
- 401: :class:`~.hubclient.Revoked` propagates: the agent stops.
- no connection, timeouts, 5xx, 408, 425, 429: :class:`~.hubclient.HubUnavailable` propagates and the same
  entries are sent again after a backoff.

Drops the spool had to make for lack of room (:meth:`Spool.dropped`) are sent as a warning record first.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from grocerysync.agent.runner.hubclient import Answer, HubClient
from grocerysync.agent.runner.logship import LOCAL_ONLY
from grocerysync.agent.runner.reports import MAX_BODY_BYTES
from grocerysync.agent.spool import Dropped, Entry, Spool
from grocerysync.core.wire import MAX_BATCH, LogRecord

log = logging.getLogger(__name__)

#: Answers that mean "this report is not wanted any more" rather than "it is wrong".
GONE = frozenset({404, 409, 410})
#: Answers that block a log batch until someone acts (an old hub without the log route, a proxy refusing):
#: the records are kept and sent again later rather than lost.
HOLD_LOGS = frozenset({403, 404})
#: Seconds a report may take.
TIMEOUT = 60.0
_NOTICES = uuid.UUID("6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")


class Deferred(Exception):
    """The hub cannot take these entries now, for a reason a person must fix; try again after a backoff."""


class Shipper:
    """Ships the spool; :meth:`ship_once` sends one batch, :meth:`drain` until the spool is empty."""

    def __init__(
        self, spool: Spool, client: HubClient, *, on_dropped: Callable[[list[Dropped]], None] | None = None
    ) -> None:
        self.spool = spool
        self.client = client
        #: Told of the drop notices the hub now has (the agent keeps reporting itself degraded for a while).
        self.on_dropped = on_dropped
        #: Lowered after a 413 so the next log batches are smaller.
        self.max_records = MAX_BATCH
        self.shipped = 0
        self._last_problem = ""

    def _problem(self, message: str) -> None:
        if message != self._last_problem:  # one line per distinct problem, not one per attempt
            self._last_problem = message
            log.error("%s", message)
        raise Deferred(message)

    async def drain(self) -> None:
        """Ship until nothing is left; raises HubUnavailable or Revoked like :meth:`ship_once`."""
        while await self.ship_once():
            pass

    async def ship_once(self) -> bool:
        """Send the oldest waiting batch (and any drop notices); False when the spool was empty."""
        notices = await asyncio.to_thread(self.spool.dropped)
        if notices:
            await self._ship_notices(notices)
        oldest = await asyncio.to_thread(self.spool.batch, None, 1)
        if not oldest:
            return False
        first = oldest[0]
        if first.kind == "log":
            # Log records may overtake reports (and reports them): only a run's rejections and its result must
            # stay in order, and they are all of kind "result".
            await self._ship_logs(await asyncio.to_thread(self.spool.batch, "log", self.max_records))
        elif first.kind == "result":
            await self._ship_report(first)
        else:
            # Progress reports are sent directly, never spooled, by this agent; an older agent's are stale.
            await asyncio.to_thread(self.spool.confirm, [first.id])
        return True

    # -- logs ----------------------------------------------------------------------------

    async def _ship_logs(self, entries: list[Entry]) -> None:
        records: list[bytes] = []
        ids: list[int] = []
        bad: list[int] = []
        size = 0
        for entry in entries:
            try:
                record = LogRecord.model_validate(entry.payload)
            except ValidationError as exc:
                bad.append(entry.id)
                log.error(
                    "dropped a spooled log record the hub could never accept (%s)",
                    exc.errors()[0]["msg"],
                    extra={LOCAL_ONLY: True},
                )
                continue
            encoded = orjson.dumps(record.model_dump(mode="json"))
            if records and size + len(encoded) + 1 > MAX_BODY_BYTES:
                break
            records.append(encoded)
            ids.append(entry.id)
            size += len(encoded) + 1
        if bad:
            await asyncio.to_thread(self.spool.confirm, bad)
        if not records:
            return
        body = b'{"records":[' + b",".join(records) + b"]}"
        answer = await self.client.post("logs", body, time_limit=TIMEOUT)
        if answer.ok:
            await asyncio.to_thread(self.spool.confirm, ids)
            self._last_problem = ""
            self.shipped += len(ids)
            self.max_records = min(MAX_BATCH, self.max_records * 2)
            return
        if answer.status in HOLD_LOGS:
            self._problem(
                f"the hub at {self.client.base} does not take log records (HTTP {answer.status}: "
                f"{answer.message or 'no explanation'}); they stay in the spool: check the hub's version and any "
                "proxy in between"
            )
        if answer.status == 413 and len(ids) > 1:
            self.max_records = max(1, len(ids) // 2)
            log.info("the hub found %d log records too large for one request; sending smaller batches", len(ids))
            return
        log.error(
            "the hub refused %d log records (HTTP %d: %s); they are dropped, as they can never be accepted",
            len(ids),
            answer.status,
            answer.message or "no explanation",
        )
        await asyncio.to_thread(self.spool.confirm, ids)

    async def _ship_notices(self, notices: list[Dropped]) -> None:
        now = datetime.now(UTC).isoformat()
        records = [
            {
                # One uid per notice: a notice sent twice (lost answer) is stored once.
                "uid": str(uuid.uuid5(_NOTICES, f"{n.kind}:{n.upto}:{n.count}")),
                "at": now,
                "level": "warning",
                "logger": "grocerysync.agent.spool",
                "message": n.message(),
                "run_id": None,
                "extra": {"dropped": n.count, "kind": n.kind, "bytes": n.bytes},
            }
            for n in notices
        ]
        answer = await self.client.post("logs", {"records": records}, time_limit=TIMEOUT)
        if not answer.ok:
            log.error("the hub refused the spool's drop notice (HTTP %d: %s)", answer.status, answer.message or "?")
        await asyncio.to_thread(self.spool.clear_dropped, notices)
        if self.on_dropped is not None:
            self.on_dropped(notices)

    # -- run reports and command results --------------------------------------------------------

    async def _ship_report(self, entry: Entry) -> None:
        payload: dict[str, Any] = entry.payload
        path, what, body = payload.get("path"), payload.get("what") or "a report", payload.get("body")
        if not isinstance(path, str) or not isinstance(body, dict):
            log.error("dropped a damaged report from the spool (entry %d, key %s)", entry.id, entry.key)
            await asyncio.to_thread(self.spool.confirm, [entry.id])
            return
        answer = await self.client.post(path, body, time_limit=TIMEOUT)
        if answer.status == 403:
            self._problem(
                f"the hub at {self.client.base} refused {what} (HTTP 403: {answer.message or 'no explanation'}); "
                "it stays in the spool: check any proxy between this machine and the hub"
            )
        if not answer.ok:
            self._explain(answer, what)
        await asyncio.to_thread(self.spool.confirm, [entry.id])
        self.shipped += 1

    @staticmethod
    def _explain(answer: Answer, what: str) -> None:
        message = answer.message or "no explanation"
        if answer.status in GONE:
            log.warning("the hub no longer expects %s (HTTP %d: %s); dropped it", what, answer.status, message)
        else:
            log.error(
                "the hub refused %s (HTTP %d: %s); dropped it, as it can never be accepted; "
                "check that the agent and the hub are compatible versions",
                what,
                answer.status,
                message,
            )
