"""``grocerysync-agent run``: the agent's connection to its hub (polls, runs, reports, log shipping).

See :mod:`.loop` for the overall shape; :mod:`.hubclient` talks to the hub, :mod:`.worker` carries out one
run, :mod:`.reports` and :mod:`.shipper` get results and logs to the hub through the spool, :mod:`.logship`
collects the agent's log records, :mod:`.commands` and :mod:`.diagnostics` answer technicians' commands.
"""

from grocerysync.agent.runner.loop import EXIT_OK, AgentRunner, RunnerOptions
from grocerysync.agent.service import EXIT_REVOKED

__all__ = ["EXIT_OK", "EXIT_REVOKED", "AgentRunner", "RunnerOptions"]
