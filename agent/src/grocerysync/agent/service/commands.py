"""``grocerysync-agent service install|uninstall|status``: pick the platform, build the plan, carry it out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from grocerysync.agent import paths
from grocerysync.agent.service import (
    Plan,
    ServiceError,
    ServiceSpec,
    execute,
)

EXIT_INSTALLED, EXIT_NOT_INSTALLED = 0, 1


def platform() -> str:
    """``linux`` or ``windows``; ServiceError elsewhere."""
    if sys.platform == "win32":
        return "windows"
    if sys.platform.startswith("linux"):
        return "linux"
    raise ServiceError(
        f"`service install` supports Linux (systemd) and Windows, not {sys.platform}; run "
        "`grocerysync-agent run` under this system's own service manager instead"
    )


def make_spec(*, state_dir: Path | None, user: str | None, name: str) -> ServiceSpec:
    """The spec for this environment: its interpreter, an absolute state directory, the account."""
    state = (state_dir or paths.default_state_dir()).expanduser().absolute()
    # Not resolved: a venv's bin/python is a symlink, and the link (not its target) is what selects the venv.
    python = Path(sys.executable).absolute()
    return ServiceSpec(python=python, state_dir=state, name=name, user=user)


def _plan(action: str, spec: ServiceSpec, *, unit_dir: Path | None, start: bool) -> Plan:
    if platform() == "windows":
        from grocerysync.agent.service import windows

        if unit_dir is not None:
            raise ServiceError("--unit-dir is for systemd units on Linux; leave it out on Windows")
        if action == "install":
            return windows.plan_install(spec, windows.current_layout(), start=start)
        return windows.plan_uninstall(spec)
    from grocerysync.agent.service import systemd

    where = unit_dir or systemd.UNIT_DIR
    if action == "install":
        return systemd.plan_install(spec, where, start=start)
    return systemd.plan_uninstall(spec, where)


def service_command(
    action: str,
    *,
    state_dir: Path | None,
    user: str | None,
    name: str,
    unit_dir: Path | None,
    dry_run: bool,
    start: bool,
    out: TextIO,
) -> int:
    """Run one ``service`` action; return the exit status (``status``: 0 installed, 1 not installed)."""
    spec = make_spec(state_dir=state_dir, user=user, name=name)
    if action == "status":
        if platform() == "windows":
            from grocerysync.agent.service import windows

            installed, lines = windows.status(name)
        else:
            from grocerysync.agent.service import systemd

            installed, lines = systemd.status(name, unit_dir or systemd.UNIT_DIR)
        out.write(f"{name}: {'installed' if installed else 'not installed'}\n")
        out.writelines(f"  {line}\n" for line in lines)
        return EXIT_INSTALLED if installed else EXIT_NOT_INSTALLED

    plan = _plan(action, spec, unit_dir=unit_dir, start=start)
    if dry_run:
        out.write(f"would {action} the service {name} (dry run: nothing is changed)\n")
        out.write(plan.describe() + "\n")
        return 0
    execute(plan, out)
    out.write(f"{name}: {'installed' if action == 'install' else 'uninstalled'}\n")
    return 0
