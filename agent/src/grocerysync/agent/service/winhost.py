"""The Windows service host: what the Service Control Manager starts (see :mod:`.windows` for why).

Started as ``<base python.exe> -I winhost.py --site-packages DIR --name NAME --state-dir DIR``. It first
makes the agent's virtual environment importable (standard library only until then), then hands control to
pywin32's ``servicemanager`` and runs the same ``grocerysync-agent run`` command a technician runs by hand,
in a worker thread. A stop from the SCM becomes :func:`grocerysync.agent.service.control.request_stop`.

This is the only module that needs pywin32, and it runs only on Windows.
"""

from __future__ import annotations

import argparse
import importlib
import os
import site
import sys
import threading
from pathlib import Path
from typing import Any

#: How long a stop may take before the host gives up waiting for the current step (the SCM's own limit).
STOP_GRACE_SECONDS = 60


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The host's arguments (written into the service's command line by ``service install``)."""
    parser = argparse.ArgumentParser(prog="grocerysync-agent-service")
    parser.add_argument("--site-packages", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--state-dir", required=True)
    return parser.parse_args(argv)


def bootstrap(site_packages: str) -> None:
    """Make the virtual environment importable: its ``.pth`` files run too (pywin32 finds its DLLs so)."""
    site.addsitedir(site_packages)


def _service_class(name: str, state_dir: str) -> Any:
    win32serviceutil: Any = importlib.import_module("win32serviceutil")
    win32service: Any = importlib.import_module("win32service")
    servicemanager: Any = importlib.import_module("servicemanager")

    from grocerysync.agent import cli
    from grocerysync.agent.service import EXIT_REVOKED, control

    class AgentService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        _svc_name_ = name
        _svc_display_name_ = "GrocerySync agent"

        def SvcStop(self) -> None:  # pywin32's names
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=STOP_GRACE_SECONDS * 1000)
            control.request_stop()

        def SvcDoRun(self) -> None:  # pywin32's names
            codes: list[int] = []
            worker = threading.Thread(
                target=lambda: codes.append(cli.main(["run", "--state-dir", state_dir])), name="agent", daemon=True
            )
            worker.start()
            while worker.is_alive() and not control.wait_for_stop(1.0):
                pass
            worker.join(STOP_GRACE_SECONDS)
            code = codes[0] if codes else 1
            if code == EXIT_REVOKED:
                # The hub refused the credential: a restart cannot help. Report "stopped" (no recovery action).
                servicemanager.LogErrorMsg(
                    f"{name}: the hub refused this agent's credential (revoked?); the service stays stopped. "
                    "Enroll again (grocerysync-agent enroll --force ...) and start the service"
                )
                return
            if not control.stop_requested() and code != 0:
                servicemanager.LogErrorMsg(f"{name}: the agent stopped with exit status {code}; Windows restarts it")
                # Leaving without reporting "stopped" counts as a crash: the SCM's recovery actions restart us.
                os._exit(code)

    return AgentService


def main(argv: list[str] | None = None) -> None:
    """Entry point when the SCM starts the host."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if sys.stdout is None or sys.stderr is None:
        # A service has no console: without this, the first line the agent prints would raise.
        state = Path(args.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        output = (state / "service-output.log").open(
            "a", encoding="utf-8", buffering=1
        )  # open for the life of the process
        sys.stdout = sys.stdout or output
        sys.stderr = sys.stderr or output
    bootstrap(args.site_packages)
    servicemanager: Any = importlib.import_module("servicemanager")
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(_service_class(args.name, args.state_dir))
    servicemanager.StartServiceCtrlDispatcher()


if __name__ == "__main__":
    main()
