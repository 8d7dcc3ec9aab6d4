"""The agent as a Windows service: registered with ``sc.exe``, hosted by :mod:`~grocerysync.agent.service.winhost`.

Why this shape (docs/agent-service.md has the long version): a virtual environment's ``Scripts\\python.exe``
is a small launcher that starts the base interpreter as a *child* process, so the process the Service
Control Manager (SCM) started is not the one that would talk to it; and pywin32's ``pythonservice.exe``
does not find a virtual environment's packages. So the service runs the **base** interpreter directly,
isolated (``-I``), on the host script, and tells it the environment's ``site-packages``; the host adds that
directory (running its ``.pth`` files, which is how pywin32 finds its DLLs) and then talks to the SCM
through pywin32's ``servicemanager``, the same way frozen services do. Registration is plain ``sc.exe``
(no pywin32 needed to install), and every command line is built here by pure functions that the tests check
on any operating system. This module imports nothing Windows-only.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from grocerysync.agent.service import DESCRIPTION, Command, Plan, ServiceError, ServiceSpec

DISPLAY_NAME = "GrocerySync agent"
#: Windows accounts that log on without a password; any other account would need one on the command line.
_PASSWORDLESS = re.compile(
    r"^(LocalSystem|NT AUTHORITY\\(LocalService|NetworkService|SYSTEM)|NT SERVICE\\.+|.+\$)$", re.I
)
#: sc.exe's exit codes: the service does not exist / is not running.
ERROR_SERVICE_DOES_NOT_EXIST = 1060
ERROR_SERVICE_NOT_ACTIVE = 1062


def virtual_account(name: str) -> str:
    """The per-service virtual account (``NT SERVICE\\<name>``): least privilege, no password to manage."""
    return f"NT SERVICE\\{name}"


def service_python(prefix: str, base_prefix: str, executable: str, base_executable: str) -> PureWindowsPath:
    """The interpreter the SCM should start: the base ``python.exe``, never a venv's launcher.

    Arguments are ``sys.prefix``, ``sys.base_prefix``, ``sys.executable`` and ``sys._base_executable``.
    ``python.exe`` rather than ``pythonw.exe``: a service has no desktop, so no console window shows, and
    under ``pythonw.exe`` ``sys.stdout`` is None, which breaks libraries that print.
    """
    in_venv = prefix != base_prefix
    python = PureWindowsPath(base_executable if in_venv else executable)
    if python.name.lower() == "pythonw.exe":
        python = python.with_name("python.exe")
    if "windowsapps" in (p.lower() for p in python.parts):
        raise ServiceError(
            f"{python} is the Microsoft Store Python, which Windows services cannot start; install Python from "
            "python.org for all users, create the agent's virtual environment with it and install again"
        )
    return python


def bin_path(python: PureWindowsPath, host: PureWindowsPath, site_packages: PureWindowsPath, spec: ServiceSpec) -> str:
    """The service's command line (``binPath``), quoted for Windows so paths with spaces survive."""
    argv = [
        str(python),
        "-I",  # ignore PYTHON* variables and the user's site-packages; no script directory on sys.path
        str(host),
        "--site-packages",
        str(site_packages),
        "--name",
        spec.name,
        "--state-dir",
        str(PureWindowsPath(spec.state_dir)),
    ]
    return subprocess.list2cmdline(argv)


@dataclass(frozen=True, slots=True)
class WindowsLayout:
    """Where things are on the Windows machine (from ``sys``/``sysconfig`` there; given by tests here)."""

    python: PureWindowsPath
    host: PureWindowsPath
    site_packages: PureWindowsPath


def _account(spec: ServiceSpec) -> str:
    account = spec.user or virtual_account(spec.name)
    if not _PASSWORDLESS.match(account):
        raise ServiceError(
            f"--user {account!r} is an account with a password, which this command does not take (it would show "
            "in the process list); install with the default virtual account, then set the account in "
            "services.msc (Log On tab), or give NT AUTHORITY\\LocalService, NetworkService or a managed "
            "service account (name ending in $)"
        )
    return account


def plan_install(spec: ServiceSpec, layout: WindowsLayout, *, start: bool = True) -> Plan:
    """Register, describe, set restart-on-failure, lock the state directory down to the service, start."""
    account = _account(spec)
    name = spec.name
    state = str(PureWindowsPath(spec.state_dir))
    sc = "sc.exe"
    commands = [
        Command(
            [
                sc,
                "create",
                name,
                "binPath=",
                bin_path(layout.python, layout.host, layout.site_packages, spec),
                "start=",
                "delayed-auto",
                "obj=",
                account,
                "DisplayName=",
                DISPLAY_NAME,
            ],
            f"register the service {name}",
        ),
        Command([sc, "description", name, DESCRIPTION], "set its description"),
        # Like systemd's Restart=on-failure: restart after 10 s, 30 s, 60 s; forget failures after a day.
        Command(
            [sc, "failure", name, "reset=", "86400", "actions=", "restart/10000/restart/30000/restart/60000"],
            "set restart on failure",
        ),
        # Also count "stopped with an error code" as a failure, not only a crash.
        Command([sc, "failureflag", name, "1"], "count error exits as failures"),
        Command([sc, "sidtype", name, "unrestricted"], "give the service its own security identifier"),
        # Owner-only state: inheritance off; SYSTEM, Administrators and the service's account only.
        Command(
            [
                "icacls",
                state,
                "/inheritance:r",
                "/grant:r",
                "*S-1-5-18:(OI)(CI)F",  # SYSTEM
                "*S-1-5-32-544:(OI)(CI)F",  # Administrators
                f"{account}:(OI)(CI)M",
            ],
            f"restrict {state} to the service",
        ),
    ]
    if start:
        commands.append(Command([sc, "start", name], f"start {name}"))
    return Plan(mkdirs=[(spec.state_dir, None)], commands=commands)


def plan_uninstall(spec: ServiceSpec) -> Plan:
    """Stop (if running) and delete the service; the state directory is kept."""
    plan = Plan(
        commands=[
            Command(
                ["sc.exe", "stop", spec.name],
                f"stop {spec.name}",
                ok=(0, ERROR_SERVICE_NOT_ACTIVE),
            ),
            Command(["sc.exe", "delete", spec.name], f"delete the service {spec.name}"),
        ]
    )
    plan.notes.append(f"the state directory {spec.state_dir} (credential, spool, delta stores) was kept")
    return plan


def parse_query(returncode: int, output: str) -> tuple[bool, str]:
    """(installed, state) from ``sc.exe query NAME``: state as Windows names it (``RUNNING``, ``STOPPED``...)."""
    if returncode == ERROR_SERVICE_DOES_NOT_EXIST:
        return False, "not installed"
    match = re.search(r"^\s*STATE\s*:\s*\d+\s+(\w+)", output, re.M)
    if returncode != 0 or match is None:
        last = output.strip().splitlines()[-1:] or [f"exit {returncode}"]
        return False, f"unknown ({last[0].strip()})"
    return True, match.group(1)


def current_layout() -> WindowsLayout:
    """This environment's interpreter, host script and site-packages (called on Windows only)."""
    import sys
    import sysconfig

    python = service_python(sys.prefix, sys.base_prefix, sys.executable, getattr(sys, "_base_executable", ""))
    host = PureWindowsPath(Path(__file__).with_name("winhost.py").resolve())
    return WindowsLayout(python, host, PureWindowsPath(sysconfig.get_paths()["purelib"]))


def status(name: str) -> tuple[bool, list[str]]:
    """(installed, lines to show) from ``sc.exe query`` (Windows only)."""
    try:
        done = subprocess.run(["sc.exe", "query", name], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ServiceError(f"could not ask Windows about the service {name}: {exc}") from None
    installed, state = parse_query(done.returncode, done.stdout + done.stderr)
    return installed, [f"service {name}: {state}"]
