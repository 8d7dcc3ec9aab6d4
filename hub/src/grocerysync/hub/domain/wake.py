"""Wake-ups for long-polling agents: "there is something for store S (or agent A)", inside and across hub processes.

A poll registers its waiter *before* it looks in the database for work, then waits on it; whoever creates work
(a trigger, the scheduler, a cancel, a command) calls :meth:`Wakeups.notify_store` or
:meth:`Wakeups.notify_agent` *after* committing it. So a poll either sees the work in the database or is woken,
never neither. A wake-up carries no data: the woken poll reads the database again.

Within one process the waiters are :class:`asyncio.Event` objects. Across processes (several hubs on one
PostgreSQL database) each notification is also published with ``NOTIFY`` and every process ``LISTEN``s
(see :meth:`Wakeups.start`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator


class Wakeups:
    """The process's registry of waiting polls, keyed by agent and by store."""

    def __init__(self) -> None:
        self._by_agent: defaultdict[int, set[asyncio.Event]] = defaultdict(set)
        self._by_store: defaultdict[int, set[asyncio.Event]] = defaultdict(set)

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

    async def notify_store(self, store_id: int) -> None:
        """Work for the store was committed: wake its agents' polls, here and in every other hub process."""
        self.wake_store_locally(store_id)

    async def notify_agent(self, agent_id: int) -> None:
        """Something for this agent was committed (a command, a cancel): wake its polls everywhere."""
        self.wake_agent_locally(agent_id)


def _discard(index: defaultdict[int, set[asyncio.Event]], key: int, event: asyncio.Event) -> None:
    events = index.get(key)
    if events is not None:
        events.discard(event)
        if not events:
            del index[key]


#: The process's wake-ups (one per process: the hub app and the scheduler share it).
WAKEUPS = Wakeups()
