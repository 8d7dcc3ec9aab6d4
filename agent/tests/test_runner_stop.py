"""Stopping ``grocerysync-agent run`` at the worst moment: the poll has just ended with an error when the agent's
shutdown cancels the poll loop. Its outcome must still be looked at (a revoked credential still gives exit
status 3), and asyncio must have nothing to print about it ("Task exception was never retrieved" and a
traceback on the agent's stderr)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from fakehub import FakeHub
from runner_support import FAST

# The hub and state fixtures (imported under their own names, used as parameters).
from runner_support import enrolled_state as enrolled_state
from runner_support import fake_hub as fake_hub

from grocerysync.agent.runner import AgentRunner, RunnerOptions
from grocerysync.agent.service import EXIT_REVOKED
from grocerysync.core.manager import PluginManager


@pytest.mark.parametrize(("status", "exit_status"), [(503, 0), (401, EXIT_REVOKED)], ids=["unavailable", "revoked"])
def test_a_poll_that_fails_as_the_agent_stops_is_not_left_unretrieved(
    hub: FakeHub,
    state: Path,
    status: int,
    exit_status: int,
) -> None:
    hub.fail("poll", status)  # the first poll: 503 (HubUnavailable) or 401 (Revoked)
    reported: list[dict[str, Any]] = []
    polls: list[weakref.ref[asyncio.Task[Any]]] = []

    async def main() -> tuple[int, bool]:
        runner = AgentRunner(state, plugins=lambda: PluginManager(autoload=False), options=RunnerOptions(**FAST))

        def stop_now(poll: asyncio.Task[Any]) -> None:
            # What the agent's shutdown does (stopping, then cancelling its tasks), done as the first poll ends:
            # the poll loop is cancelled before it has resumed to look at the poll's outcome. In a real stop this
            # order depends on timing (about one stop in twelve).
            runner._stopping.set()
            for task in runner._tasks:
                task.cancel()

        def task_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
            task = asyncio.Task(coro, loop=loop, **kwargs)
            if getattr(coro, "__qualname__", "") == "AgentRunner._poll_once" and not polls:
                task.add_done_callback(stop_now)
                polls.append(weakref.ref(task))
            return task

        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        loop.set_task_factory(task_factory)
        code = await runner.run()
        return code, runner.revoked is not None

    assert asyncio.run(main()) == (exit_status, status == 401)
    assert hub.requests[0][0] == "poll"
    assert polls, "the runner never polled"
    gc.collect()  # the runner's finished tasks keep the poll loop's last frame, and so the poll task, in a cycle
    assert polls[0]() is None  # the poll task is gone: asyncio has had its say about it
    assert [str(context.get("message")) for context in reported] == []
