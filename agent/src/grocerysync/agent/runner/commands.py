"""What the agent does with the commands a technician sends it through the hub: cancel, reload, diagnostics.

Every command gets a result (``ok``, a message for the technician, and data), which goes through the spool
like a run's result, so a command answered while the hub is unreachable is reported when it is back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from grocerysync.agent.credentials import load_credentials
from grocerysync.agent.runner import diagnostics
from grocerysync.agent.runner.logship import one_line
from grocerysync.agent.runner.worker import BY_TECHNICIAN
from grocerysync.core.errors import GrocerySyncError
from grocerysync.core.wire import Command

if TYPE_CHECKING:
    from grocerysync.agent.runner.loop import AgentRunner

log = logging.getLogger(__name__)


async def handle(runner: AgentRunner, command: Command) -> tuple[bool, str, dict[str, Any]]:
    """Carry out ``command``; (ok, message, data) for its result."""
    if command.type == "cancel":
        return _cancel(runner, command)
    if command.type == "reload":
        return await _reload(runner)
    return await _diagnostics(runner)


def _cancel(runner: AgentRunner, command: Command) -> tuple[bool, str, dict[str, Any]]:
    current = runner.current
    if command.run_id is None:
        return False, "a cancel command must name the run to cancel", {}
    if current is None or current.run_id != command.run_id:
        running = f"run {current.run_id} is" if current is not None else "no run is"
        return False, f"run {command.run_id} is not running on this agent ({running} running)", {}
    current.request_cancel(f"{BY_TECHNICIAN} (command {command.id})")
    log.warning("run %d: %s (command %d); stopping after the current batch", current.run_id, BY_TECHNICIAN, command.id)
    return True, f"run {command.run_id} stops after its current batch and is reported as cancelled", {}


async def _reload(runner: AgentRunner) -> tuple[bool, str, dict[str, Any]]:
    try:
        creds = await asyncio.to_thread(load_credentials, runner.state_dir)
        runner.client.configure(creds, runner.state_dir)
    except GrocerySyncError as exc:
        log.error("reload: the enrollment could not be read again: %s", exc)
        return False, f"the enrollment could not be read again: {exc}", {}
    try:
        plugins = await asyncio.to_thread(runner.load_plugins)
    except Exception as exc:  # a plugin's import-time error in strict mode, or a defect: keep the old ones
        log.error("reload: the plugins could not be loaded again (%s); keeping the ones loaded before", one_line(exc))
        return False, f"the plugins could not be loaded again: {one_line(exc)}; the agent keeps the ones it had", {}
    infos = [{"kind": i.kind, "name": i.name, "distribution": i.distribution, "version": i.version} for i in plugins]
    failures = [str(f) for f in runner.plugins.failures]
    message = (
        f"reloaded the enrollment (hub {runner.client.base}) and the plugins: {len(infos)} loaded"
        + (f", {len(failures)} failed to load" if failures else "")
        + (" (a run in progress keeps the plugins it started with)" if runner.current is not None else "")
    )
    return not failures, message, {"hub_url": runner.client.base, "plugins": infos, "plugin_failures": failures}


async def _diagnostics(runner: AgentRunner) -> tuple[bool, str, dict[str, Any]]:
    stats = await asyncio.to_thread(runner.spool.stats)
    data = await asyncio.to_thread(diagnostics.report, runner.plugins, stats, runner.agent_state())
    return True, f"diagnostics of agent {runner.client.agent_id} ({data['hostname']})", data
