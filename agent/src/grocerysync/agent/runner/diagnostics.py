"""The ``diagnostics`` command's report: what a technician needs to see about an agent without a remote session.

Everything here is about the machine and the agent; nothing is a secret (the credential and destination
secrets are never included, and the recent log lines were redacted when they were logged).
"""

from __future__ import annotations

import platform
import shutil
import socket
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from grocerysync.agent.spool import SpoolStats
from grocerysync.core.manager import PluginManager
from grocerysync.core.wire import AgentConfig

#: Log lines included in a report.
LOG_LINES = 100


def agent_version() -> str:
    """The installed agent's version ('' when it runs from a source tree without metadata)."""
    try:
        return metadata.version("grocerysync-agent")
    except metadata.PackageNotFoundError:
        return ""


def disk(path: Path) -> dict[str, Any]:
    """Free and total bytes of the disk holding ``path`` (the error, if it cannot be read)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return {"error": f"cannot read the free space of {path}: {exc}"}
    return {"free_bytes": usage.free, "total_bytes": usage.total}


@dataclass(frozen=True, slots=True)
class AgentState:
    """What the runner knows about itself when the report is made."""

    state_dir: Path
    hub_url: str
    agent_id: int
    config: AgentConfig
    running: list[int]
    uptime_s: float
    clock_skew_s: float | None
    hub_reachable: bool
    recent_log: list[str]


def report(plugins: PluginManager, spool: SpoolStats, state: AgentState) -> dict[str, Any]:
    """The diagnostics data sent in the command's result."""
    return {
        "agent_version": agent_version(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "os": platform.platform(),
        "hostname": socket.gethostname(),
        "agent_id": state.agent_id,
        "hub_url": state.hub_url,
        "hub_reachable": state.hub_reachable,
        # Positive: the hub's clock is ahead of this machine's.
        "clock_skew_s": None if state.clock_skew_s is None else round(state.clock_skew_s, 3),
        "uptime_s": round(state.uptime_s, 1),
        "config": state.config.model_dump(mode="json"),
        "running": state.running,
        "plugins": [
            {"kind": i.kind, "name": i.name, "distribution": i.distribution, "version": i.version}
            for i in plugins.infos()
        ],
        "plugin_failures": [str(f) for f in plugins.failures],
        "spool": {
            "records": spool.records,
            "bytes": spool.bytes,
            "max_records": spool.max_records,
            "max_bytes": spool.max_bytes,
            "dropped": spool.dropped,
        },
        "state_dir": str(state.state_dir),
        "disk": disk(state.state_dir),
        "recent_log": state.recent_log[-LOG_LINES:],
    }
