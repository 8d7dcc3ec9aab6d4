"""Wake-ups for long-polling agents: "there is something for store S (or agent A)", inside and across hub processes.

A poll registers its waiter *before* it looks in the database for work, then waits on it; whoever creates work
(a trigger, the scheduler, a cancel, a command) calls :meth:`Wakeups.notify_store` or
:meth:`Wakeups.notify_agent` *after* committing it. So a poll either sees the work in the database or is woken,
never neither. A wake-up carries no data: the woken poll reads the database again.

Within one process the waiters are :class:`asyncio.Event` objects. Across processes (several hubs on one
PostgreSQL database) each notification is also published with ``NOTIFY`` and every process ``LISTEN``s
(see :meth:`Wakeups.start` and :mod:`grocerysync.hub.domain.pglisten`). On SQLite wake-ups stay inside the
process: one hub process is the limit there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

from grocerysync.hub.domain.pglisten import CHANNEL, PgBridge, connect_kwargs
from grocerysync.hub.rls import is_postgres

log = logging.getLogger(__name__)

#: How long :meth:`Wakeups.start` waits for the first ``LISTEN`` before serving anyway (it keeps trying).
START_WAIT_SECONDS = 5.0


class Wakeups:
    """The process's registry of waiting polls, keyed by agent and by store."""

    def __init__(self) -> None:
        self._by_agent: defaultdict[int, set[asyncio.Event]] = defaultdict(set)
        self._by_store: defaultdict[int, set[asyncio.Event]] = defaultdict(set)
        self._bridge: PgBridge | None = None
        # start() calls not yet matched by stop(): several apps may serve in one process (tests).
        self._starts = 0

    async def start(self, db_url: str, *, channel: str = CHANNEL) -> None:
        """Share wake-ups with the other hub processes of a PostgreSQL database (nothing to do on SQLite).

        Opens a dedicated connection that ``LISTEN``s (reconnecting with backoff until :meth:`stop`); waits up to
        :data:`START_WAIT_SECONDS` for it, so a hub normally starts serving already listening.
        """
        self._starts += 1
        if self._bridge is not None or not is_postgres(db_url):
            return
        bridge = PgBridge(connect_kwargs(db_url), self._received, self.wake_all_locally, channel=channel)
        self._bridge = bridge
        bridge.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bridge.listening.wait(), START_WAIT_SECONDS)

    async def stop(self) -> None:
        """Undo :meth:`start`: the last call closes the ``LISTEN`` connection."""
        self._starts = max(0, self._starts - 1)
        if self._starts == 0 and self._bridge is not None:
            bridge, self._bridge = self._bridge, None
            await bridge.stop()

    @property
    def listening(self) -> bool:
        """Whether this process hears the other processes' wake-ups now (always False on SQLite)."""
        return self._bridge is not None and self._bridge.listening.is_set()

    async def wait_listening(self, seconds: float) -> bool:
        """Wait until :attr:`listening` (True), or ``seconds`` (False)."""
        if self._bridge is None:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bridge.listening.wait(), seconds)
        return self.listening

    @contextlib.contextmanager
    def waiter(self, agent_id: int, store_id: int) -> Iterator[asyncio.Event]:
        """An event set when this agent or its store is notified; register it before reading the database."""
        event = asyncio.Event()
        self._by_agent[agent_id].add(event)
        self._by_store[store_id].add(event)
        try:
            yield event
        finally:
            _discard(self._by_agent, agent_id, event)
            _discard(self._by_store, store_id, event)

    def waiting(self) -> int:
        """How many polls are waiting in this process."""
        return sum(len(events) for events in self._by_agent.values())

    def wake_store_locally(self, store_id: int) -> None:
        """Wake this process's polls of the store's agents."""
        for event in self._by_store.get(store_id, ()):
            event.set()

    def wake_agent_locally(self, agent_id: int) -> None:
        """Wake this process's polls of the agent."""
        for event in self._by_agent.get(agent_id, ()):
            event.set()

    def wake_all_locally(self) -> None:
        """Wake every poll of this process (after missing notifications: each reads the database again)."""
        for events in list(self._by_agent.values()):
            for event in events:
                event.set()

    async def notify_store(self, store_id: int) -> None:
        """Work for the store was committed: wake its agents' polls, here and in every other hub process."""
        self.wake_store_locally(store_id)
        if self._bridge is not None:
            self._bridge.publish(f"store:{store_id}")

    async def notify_agent(self, agent_id: int) -> None:
        """Something for this agent was committed (a command, a cancel): wake its polls everywhere."""
        self.wake_agent_locally(agent_id)
        if self._bridge is not None:
            self._bridge.publish(f"agent:{agent_id}")

    def _received(self, payload: str) -> None:
        """Another hub process notified ``store:ID`` or ``agent:ID``."""
        kind, _, number = payload.partition(":")
        if not number.isdigit():
            log.debug("cross-process wake-ups: ignored the malformed notification %r", payload[:100])
            return
        if kind == "store":
            self.wake_store_locally(int(number))
        elif kind == "agent":
            self.wake_agent_locally(int(number))
        else:
            log.debug("cross-process wake-ups: ignored the notification %r", payload[:100])


def _discard(index: defaultdict[int, set[asyncio.Event]], key: int, event: asyncio.Event) -> None:
    events = index.get(key)
    if events is not None:
        events.discard(event)
        if not events:
            del index[key]


#: The process's wake-ups (one per process: the hub app and the scheduler share it).
WAKEUPS = Wakeups()
