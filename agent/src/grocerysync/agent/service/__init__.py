"""Running the agent as a service: a systemd unit on Linux, a Windows service on Windows.

``grocerysync-agent service install|uninstall|status`` works in two steps: a pure function turns a
:class:`ServiceSpec` into a :class:`Plan` (files to write or remove, directories to create, commands
to run), and :func:`execute` carries the plan out. ``--dry-run`` prints the plan instead, and the
tests check the plans on any operating system. The service always runs the same foreground command a
technician can run by hand, ``python -m grocerysync.agent run --state-dir DIR``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TextIO

from grocerysync.core.errors import GrocerySyncError

#: The exit status of ``grocerysync-agent run`` when the hub refused the agent's credential (revoked): the
#: service managers must not restart it (systemd ``RestartPreventExitStatus=``; the Windows host stops).
EXIT_REVOKED = 3
#: The service's name (systemd unit ``grocerysync-agent.service``; Windows service ``grocerysync-agent``).
DEFAULT_NAME = "grocerysync-agent"
DESCRIPTION = "GrocerySync store agent: exports items from this store's POS to its e-commerce platforms"


class ServiceError(GrocerySyncError):
    """The service cannot be installed, removed or queried as asked."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What to install: the interpreter that runs the agent, its state directory and its account."""

    python: PurePath
    state_dir: PurePath
    name: str = DEFAULT_NAME
    #: The account the service runs as; None picks the platform's least-privileged default.
    user: str | None = None

    def run_args(self) -> list[str]:
        """The agent's arguments after the interpreter: the foreground ``run`` command."""
        return ["-m", "grocerysync.agent", "run", "--state-dir", str(self.state_dir)]


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a plan; exit codes in ``ok`` count as success (e.g. "already stopped")."""

    argv: list[str]
    what: str
    ok: tuple[int, ...] = (0,)


@dataclass(slots=True)
class Plan:
    """What install or uninstall does, in order: first commands, directories, file writes and removals, commands.

    ``run_commands`` False means the service manager is not running here: the commands are printed for
    the technician to run instead (``manual_reason`` says why).
    """

    first: list[Command] = field(default_factory=list)  # before any file changes (stop a running service)
    mkdirs: list[tuple[PurePath, str | None]] = field(default_factory=list)  # (directory, owner or None)
    writes: list[tuple[Path, str]] = field(default_factory=list)
    removes: list[Path] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    run_commands: bool = True
    manual_reason: str = ""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The plan as text, for ``--dry-run``: every file with its full contents and every command."""
        lines: list[str] = []
        if self.first:
            lines.append("run:" if self.run_commands else f"first run ({self.manual_reason}):")
            lines += [f"    {format_command(c.argv)}" for c in self.first]
        for path, owner in self.mkdirs:
            lines.append(f"create directory {path} (owner-only{', owned by ' + owner if owner else ''})")
        for path, text in self.writes:
            lines += [f"write {path}:", *("    " + line for line in text.splitlines())]
        for path in self.removes:
            lines.append(f"remove {path}")
        if self.commands:
            lines.append("run:" if self.run_commands else f"then run ({self.manual_reason}):")
            lines += [f"    {format_command(c.argv)}" for c in self.commands]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def format_command(argv: Sequence[str]) -> str:
    """A command line to show a person, quoted for the platform's shell."""
    if sys.platform == "win32":
        return subprocess.list2cmdline(list(argv))
    import shlex

    return shlex.join(argv)


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def execute(plan: Plan, out: TextIO, *, run: Runner = _run) -> None:
    """Carry out a plan, reporting each step on ``out``; ServiceError naming the step that failed."""
    from grocerysync.agent import paths

    _commands(plan, plan.first, out, run)
    for path, owner in plan.mkdirs:
        try:
            paths.ensure_private_dir(Path(path))
            if owner is not None:
                import shutil

                shutil.chown(path, user=owner)
        except (OSError, LookupError) as exc:
            raise ServiceError(f"cannot create the state directory {path}: {exc}; {_privilege_hint()}") from None
        out.write(f"created {path}\n")
    for path, text in plan.writes:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ServiceError(f"cannot write {path}: {exc}; {_privilege_hint()}") from None
        out.write(f"wrote {path}\n")
    for path in plan.removes:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise ServiceError(f"cannot remove {path}: {exc}; {_privilege_hint()}") from None
        out.write(f"removed {path}\n")
    _commands(plan, plan.commands, out, run)
    out.writelines(f"note: {n}\n" for n in plan.notes)


def _commands(plan: Plan, commands: list[Command], out: TextIO, run: Runner) -> None:
    if not commands:
        return
    if not plan.run_commands:
        out.write(f"{plan.manual_reason}; run these yourself:\n")
        out.writelines(f"    {format_command(c.argv)}\n" for c in commands)
        return
    for command in commands:
        try:
            done = run(command.argv)
        except OSError as exc:
            raise ServiceError(f"could not {command.what}: {format_command(command.argv)}: {exc}") from None
        if done.returncode not in command.ok:
            detail = (done.stderr or done.stdout or "").strip().splitlines()
            raise ServiceError(
                f"could not {command.what}: `{format_command(command.argv)}` exited with {done.returncode}"
                f"{': ' + detail[-1] if detail else ''}; {_privilege_hint()}"
            )
        out.write(f"{command.what}: done\n")


def _privilege_hint() -> str:
    if sys.platform == "win32":
        return "run the command from an administrator prompt"
    return "run it as root (sudo), or give --unit-dir for a directory you can write"
