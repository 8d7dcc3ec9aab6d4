"""The agent as a systemd service on Linux: a hardened unit, written and enabled by ``service install``.

The unit runs ``<this environment's python> -m grocerysync.agent run --state-dir DIR``. It may write only
its state directory (``ProtectSystem=strict``) and has no privileges or capabilities; everything else it
needs (the POS export files, the network) stays readable. With no ``--user`` it runs as a dynamic user
(``DynamicUser=yes``) that exists only while the service runs and owns ``StateDirectory=``; with
``--user`` it runs as that account and may write ``ReadWritePaths=<state dir>``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

from grocerysync.agent.service import DESCRIPTION, EXIT_REVOKED, Command, Plan, ServiceError, ServiceSpec

UNIT_DIR = Path("/etc/systemd/system")
#: Only state directories under here can be a ``StateDirectory=`` of a dynamic user.
STATE_ROOT = PurePosixPath("/var/lib")
#: ``ProtectHome=yes`` hides these; an interpreter or state directory inside them needs ``read-only``.
_HOME_ROOTS = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))


def unit_path(unit_dir: Path, name: str) -> Path:
    """The unit file of service ``name``."""
    return unit_dir / f"{name}.service"


def systemd_running() -> bool:
    """Whether systemd manages this machine (sd_booted(): the directory systemd creates at boot)."""
    return Path("/run/systemd/system").is_dir()


def _quote(value: str, *, exec_line: bool = False) -> str:
    """One word of a unit setting: specifiers (``%``) and, on Exec lines, ``$`` escaped; quoted if needed."""
    if any(c in value for c in "\n\r\0"):
        raise ServiceError(f"{value!r} cannot be written into a systemd unit (it holds a line break)")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if exec_line:
        escaped = escaped.replace("$", "$$")
    if escaped != value or not value or any(c.isspace() or c in "'\";" for c in value):
        return f'"{escaped}"'
    return escaped


def _under(path: PurePosixPath, roots: tuple[PurePosixPath, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def render_unit(spec: ServiceSpec) -> str:
    """The unit file's text for ``spec`` (pure: the same spec always gives the same text)."""
    python = PurePosixPath(spec.python)
    state = PurePosixPath(spec.state_dir)
    if not python.is_absolute() or not state.is_absolute():
        raise ServiceError(
            f"the interpreter ({python}) and the state directory ({state}) must be absolute paths in a systemd unit"
        )
    exec_start = " ".join(_quote(word, exec_line=True) for word in [str(python), *spec.run_args()])
    # A venv or state directory under /home must stay visible: read-only is the strictest that works.
    protect_home = "read-only" if _under(python, _HOME_ROOTS) or _under(state, _HOME_ROOTS) else "yes"

    if spec.user is None:
        if not _under(state, (STATE_ROOT,)) or state == STATE_ROOT:
            raise ServiceError(
                f"with no --user the service runs as a dynamic user, whose state directory must be under "
                f"{STATE_ROOT} (got {state}); give --state-dir {STATE_ROOT}/{spec.name} or --user ACCOUNT"
            )
        account = [
            "# A user that exists only while the service runs; systemd gives it the state directory.",
            "DynamicUser=yes",
            f"StateDirectory={_quote(str(state.relative_to(STATE_ROOT)))}",
            "StateDirectoryMode=0700",
        ]
    else:
        account = [f"User={_quote(spec.user)}", f"ReadWritePaths={_quote(str(state))}"]

    lines = [
        "# Written by `grocerysync-agent service install`; `grocerysync-agent service uninstall` removes it.",
        "[Unit]",
        f"Description={DESCRIPTION}",
        "Wants=network-online.target",
        "After=network-online.target",
        "# Give up restarting after 5 failures in 10 minutes (a broken install should not spin forever).",
        "StartLimitIntervalSec=600",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={exec_start}",
        f"Environment={_quote(f'GROCERYSYNC_AGENT_HOME={state}')}",
        "Environment=PYTHONUNBUFFERED=1",
        "Restart=on-failure",
        "RestartSec=10s",
        f"# Exit status {EXIT_REVOKED}: the hub refused the credential; a restart cannot help, enrolling again does.",
        f"RestartPreventExitStatus={EXIT_REVOKED}",
        "# The agent stops after its current step on SIGTERM; give a large batch time to finish.",
        "TimeoutStopSec=90s",
        *account,
        "UMask=0077",
        "# Hardening: write only the state directory, no privileges, no devices, no kernel knobs.",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ProtectHome={protect_home}",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "# Outbound HTTPS to the hub and whatever the POS and destination plugins reach.",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "# MemoryDenyWriteExecute is left off on purpose: plugins using cffi or ctypes callbacks need it.",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def plan_install(spec: ServiceSpec, unit_dir: Path, *, start: bool = True, have_systemd: bool | None = None) -> Plan:
    """Write the unit; then ``daemon-reload`` and ``enable --now`` (or only ``enable`` with ``start`` False)."""
    text = render_unit(spec)
    running = systemd_running() if have_systemd is None else have_systemd
    plan = Plan(writes=[(unit_path(unit_dir, spec.name), text)])
    if spec.user is not None:
        # A dynamic user's directory is made by systemd; a named account's is made here and handed to it.
        plan.mkdirs.append((spec.state_dir, spec.user))
    unit = f"{spec.name}.service"
    plan.commands = [
        Command(["systemctl", "daemon-reload"], "reload systemd's unit files"),
        Command(["systemctl", "enable", "--now", unit] if start else ["systemctl", "enable", unit], f"enable {unit}"),
    ]
    _manual_unless(plan, running, unit_dir)
    if spec.user is None and _under(PurePosixPath(spec.python), _HOME_ROOTS):
        plan.notes.append(
            f"the interpreter {spec.python} is inside a home directory, which the service's dynamic user cannot "
            "read; install the agent's environment under /opt (or /usr/local), or give --user ACCOUNT"
        )
    return plan


def _manual_unless(plan: Plan, running: bool, unit_dir: Path) -> None:
    """Run systemctl only where it can work: systemd running, and the unit in the directory it reads."""
    if not running:
        plan.run_commands = False
        plan.manual_reason = "systemd is not running on this machine"
    elif unit_dir != UNIT_DIR:
        plan.run_commands = False
        plan.manual_reason = f"the unit is in {unit_dir}, not in {UNIT_DIR} where systemd reads it; copy it there"


def plan_uninstall(spec: ServiceSpec, unit_dir: Path, *, have_systemd: bool | None = None) -> Plan:
    """Stop and disable the service, remove the unit, reload; the state directory is kept."""
    running = systemd_running() if have_systemd is None else have_systemd
    path = unit_path(unit_dir, spec.name)
    unit = f"{spec.name}.service"
    # `systemctl disable` removes this link; removing it here too keeps an offline uninstall complete.
    wants = unit_dir / "multi-user.target.wants" / f"{spec.name}.service"
    plan = Plan(removes=[wants, path])
    plan.first = [Command(["systemctl", "disable", "--now", unit], f"stop and disable {unit}", ok=(0, 1, 5))]
    plan.commands = [Command(["systemctl", "daemon-reload"], "reload systemd's unit files")]
    _manual_unless(plan, running, unit_dir)
    plan.notes.append(f"the state directory {spec.state_dir} (credential, spool, delta stores) was kept")
    return plan


def status(name: str, unit_dir: Path, *, have_systemd: bool | None = None) -> tuple[bool, list[str]]:
    """(installed, lines to show): the unit file, and whether systemd has it enabled and active."""
    path = unit_path(unit_dir, name)
    installed = path.is_file()
    lines = [f"unit file: {path} ({'present' if installed else 'absent'})"]
    running = systemd_running() if have_systemd is None else have_systemd
    if not running:
        lines.append("systemd is not running on this machine: enabled/active state unknown")
        return installed, lines
    unit = f"{name}.service"
    for query in ("is-enabled", "is-active"):
        try:
            done = subprocess.run(["systemctl", query, unit], capture_output=True, text=True, check=False)
            answer = done.stdout.strip() or done.stderr.strip() or f"exit {done.returncode}"
        except OSError as exc:
            answer = f"unknown ({exc})"
        lines.append(f"{query.removeprefix('is-')}: {answer}")
    return installed, lines
