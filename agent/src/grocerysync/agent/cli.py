"""The ``grocerysync-agent`` command line.

``export JOB.json`` runs one export (exit 0 succeeded, 1 partially failed, 2 failed or could not run);
``plugins`` lists the installed plugins and any that failed to load; ``enroll`` trades a one-time enrollment
token for this agent's credential; ``run`` connects to the hub and carries out the runs it hands out until
stopped (exit 0 stopped, 2 could not start, 3 the hub refused the credential); ``service install|uninstall|status``
runs the agent as a systemd or Windows service. Every expected problem is one line on stderr; ``--debug``
adds the traceback and the agent's log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson
from pydantic import ValidationError

from grocerysync.agent import paths
from grocerysync.agent.pipeline import run_export
from grocerysync.agent.service import EXIT_REVOKED
from grocerysync.agent.summary import Progress
from grocerysync.core.config import field_errors
from grocerysync.core.errors import GrocerySyncError
from grocerysync.core.jobs import JobSpec
from grocerysync.core.manager import PluginManager

EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2
_EXIT = {"succeeded": EXIT_OK, "partially_failed": EXIT_PARTIAL, "failed": EXIT_FAILED, "cancelled": EXIT_FAILED}


class UsageError(GrocerySyncError):
    """A problem with what the command was given (a missing or malformed job file)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and the agent's log"
    )
    parser = argparse.ArgumentParser(
        prog="grocerysync-agent",
        description="GrocerySync store agent: export items from this store's POS to its e-commerce platforms.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    export = commands.add_parser(
        "export",
        parents=[common],
        help="run one export job",
        description="Run one export job. Exit status: 0 succeeded, 1 partially failed, 2 failed or could not run.",
    )
    export.add_argument("job", type=Path, metavar="JOB.json", help="the job file (source, destination, mapping, ...)")
    export.add_argument("--dry-run", action="store_true", help="send nothing; write what would be sent to a preview")
    export.add_argument("--full", action="store_true", help="send every item, not only what changed")
    export.add_argument("--json", action="store_true", help="print the run summary as JSON")
    export.add_argument(
        "--state-dir",
        type=Path,
        help=f"where delta state and run files are kept (default: ${paths.HOME_ENV} or {paths.default_state_dir()})",
    )
    plugins = commands.add_parser("plugins", parents=[common], help="list installed plugins")
    plugins.add_argument("--json", action="store_true", help="print the list as JSON")
    _add_service_parser(commands, common)
    _add_enroll_parser(commands, common)
    _add_run_parser(commands, common)
    return parser


def _add_run_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[common],
        help="connect to the hub and carry out its runs until stopped (what the service runs)",
        description="Connect to the hub this agent is enrolled with, carry out the runs and commands it hands out "
        "and ship results and logs, until stopped (Ctrl+C, SIGTERM, a service stop). Exit status: 0 stopped, "
        f"2 could not start (not enrolled, unusable hub address), {EXIT_REVOKED} the hub refused this agent's "
        "credential (enroll again; the service is not restarted).",
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        help=f"the enrollment, spool and delta stores (default: ${paths.HOME_ENV} or {paths.default_state_dir()})",
    )
    run.add_argument(
        "--once-idle",
        type=float,
        metavar="SECONDS",
        help="exit (status 0) once there has been nothing to do for SECONDS: no run, nothing left to ship",
    )


def _add_enroll_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    enroll = commands.add_parser(
        "enroll",
        parents=[common],
        help="enroll this agent with the hub (once per machine)",
        description="Trade the one-time enrollment token your technician created for this store for this agent's "
        "own credential, kept owner-only in the state directory. Exit status: 0 enrolled, 2 not enrolled.",
    )
    enroll.add_argument("--hub", required=True, metavar="URL", help="the hub's address, https://HOST[:PORT]")
    enroll.add_argument("--token", required=True, help="the enrollment token (single use, expires)")
    enroll.add_argument("--ca-file", type=Path, help="trust only this CA certificate (PEM) for the hub")
    enroll.add_argument(
        "--allow-http", action="store_true", help="allow plain http:// to a hub on this machine (development only)"
    )
    enroll.add_argument(
        "--state-dir",
        type=Path,
        help=f"where the enrollment is kept (default: ${paths.HOME_ENV} or {paths.default_state_dir()})",
    )
    enroll.add_argument("--force", action="store_true", help="replace an existing enrollment")


def _add_service_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    from grocerysync.agent.service import DEFAULT_NAME

    service = commands.add_parser(
        "service",
        parents=[common],
        help="run the agent as a service (systemd on Linux, a Windows service on Windows)",
        description="Install, remove or inspect the agent's service. It runs `grocerysync-agent run` with this "
        "environment's Python. Exit status of status: 0 installed, 1 not installed.",
    )
    service.add_argument("action", choices=["install", "uninstall", "status"])
    service.add_argument(
        "--state-dir",
        type=Path,
        help=f"the service's state directory (default: ${paths.HOME_ENV} or {paths.default_state_dir()})",
    )
    service.add_argument(
        "--user",
        help="the account the service runs as (default: a dynamic user on Linux, the virtual account "
        "NT SERVICE\\<name> on Windows)",
    )
    service.add_argument("--name", default=DEFAULT_NAME, help=f"the service's name (default: {DEFAULT_NAME})")
    service.add_argument(
        "--unit-dir", type=Path, help="Linux: where to write the systemd unit (default: /etc/systemd/system)"
    )
    service.add_argument("--no-start", action="store_true", help="register the service but do not start it now")
    service.add_argument("--dry-run", action="store_true", help="print what would be written and run; change nothing")


def load_job(path: Path) -> JobSpec:
    """Read and validate a job file; UsageError with line/column or the bad fields otherwise."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"job file {path} does not exist; give the path of a job JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read job file {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"job file {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; fix it there"
        ) from None
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(exc))
        raise UsageError(f"invalid job in {path}: {detail}") from None


class _Bar:
    """A tqdm counter on stderr (only when stderr is a terminal)."""

    def __init__(self, job: str) -> None:
        from tqdm import tqdm  # imported here: only interactive runs pay for it

        self._bar = tqdm(desc=f"export {job}", unit=" items", file=sys.stderr, dynamic_ncols=True, leave=False)

    def __call__(self, p: Progress) -> None:
        self._bar.update(p.read - self._bar.n)
        self._bar.set_postfix_str(
            f"{p.phase}: sent {p.sent}, unchanged {p.unchanged}, rejected {p.rejected}, failed {p.failed}",
            refresh=False,
        )

    def close(self) -> None:
        self._bar.close()


def _export(args: argparse.Namespace, manager: Callable[[], PluginManager], out: TextIO, err: TextIO) -> int:
    job = load_job(args.job)
    state_dir = paths.ensure_private_dir(args.state_dir or paths.default_state_dir())
    bar = _Bar(job.name) if err.isatty() and not args.json else None
    try:
        summary = asyncio.run(
            run_export(job, plugins=manager(), state_dir=state_dir, full=args.full, dry_run=args.dry_run, progress=bar)
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        out.write(summary.to_json() + "\n")
    elif summary.status != "failed" or summary.read:
        out.write(summary.format_text() + "\n")
    if summary.error:
        err.write(f"grocerysync-agent: error: {summary.error}\n")
        if getattr(args, "debug", False) and summary.exception is not None:
            traceback.print_exception(summary.exception, file=err)
    return _EXIT[summary.status]


def _plugins(args: argparse.Namespace, manager: Callable[[], PluginManager], out: TextIO, err: TextIO) -> int:
    pm = manager()
    infos = pm.infos()
    failures = list(pm.failures)
    if args.json:
        doc: dict[str, Any] = {
            "plugins": [
                {"kind": i.kind, "name": i.name, "distribution": i.distribution, "version": i.version} for i in infos
            ],
            "failures": [
                {"entry_point": f.entry_point, "distribution": f.distribution, "error": f.error} for f in failures
            ],
        }
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        if not infos:
            out.write("no plugins installed\n")
        else:
            rows = [("KIND", "NAME", "DISTRIBUTION", "VERSION")] + [
                (i.kind, i.name, i.distribution, i.version) for i in infos
            ]
            widths = [max(len(r[c]) for r in rows) for c in range(3)]
            for r in rows:
                out.write(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}\n")
        for f in failures:
            err.write(f"grocerysync-agent: warning: {f}\n")
    return EXIT_PARTIAL if failures else EXIT_OK


def _service(args: argparse.Namespace, manager: Callable[[], PluginManager], out: TextIO, err: TextIO) -> int:
    from grocerysync.agent.service.commands import service_command

    return service_command(
        args.action,
        state_dir=args.state_dir,
        user=args.user,
        name=args.name,
        unit_dir=args.unit_dir,
        dry_run=args.dry_run,
        start=not args.no_start,
        out=out,
    )


def _enroll(args: argparse.Namespace, manager: Callable[[], PluginManager], out: TextIO, err: TextIO) -> int:
    from grocerysync.agent.enroll import enroll  # imported here: aiohttp is only needed by this command

    done = enroll(
        args.hub,
        args.token,
        args.state_dir or paths.default_state_dir(),
        ca_file=args.ca_file,
        allow_http=args.allow_http,
        force=args.force,
        plugins=manager(),
    )
    creds = done.credentials
    out.write(
        f"enrolled as agent {creds.agent_id} of store {creds.store_name!r} (store {creds.store_id}) "
        f"at {creds.hub_url}; credential stored in {done.path}\n"
    )
    return EXIT_OK


def _run(args: argparse.Namespace, manager: Callable[[], PluginManager], out: TextIO, err: TextIO) -> int:
    import threading

    from grocerysync.agent.runner import AgentRunner, RunnerOptions
    from grocerysync.agent.runner.logship import ConsoleFormatter
    from grocerysync.agent.service import control

    debug = bool(getattr(args, "debug", False))
    if args.once_idle is not None and args.once_idle < 0:
        raise UsageError("--once-idle must be 0 or more seconds")
    # The console is the service's log (journald; service-output.log on Windows): one line per event.
    console = logging.StreamHandler(err)
    console.setFormatter(ConsoleFormatter(debug=debug))
    console.setLevel(logging.DEBUG if debug else logging.INFO)
    _configure_logging(False, err)  # the runner's handlers replace the usual quiet setup
    if threading.current_thread() is threading.main_thread():
        control.install_signal_handlers()  # the Windows service host calls main() in a worker thread instead
    runner = AgentRunner(
        args.state_dir or paths.default_state_dir(),
        plugins=manager,
        options=RunnerOptions(idle_exit=args.once_idle),
        console=console,
    )
    code = asyncio.run(runner.run())
    if runner.revoked is not None:
        err.write(f"grocerysync-agent: error: {runner.revoked}\n")
    return code


def _configure_logging(debug: bool, err: TextIO) -> None:
    root = logging.getLogger("grocerysync")
    if debug:
        handler: logging.Handler = logging.StreamHandler(err)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.DEBUG)
    else:
        # Everything a person needs is in the one-line error and the summary; without a handler Python
        # would print log records (and tracebacks) to stderr on its own.
        handler = logging.NullHandler()
    for old in [h for h in root.handlers if getattr(h, "_grocerysync_cli", False)]:
        root.removeHandler(old)
    handler._grocerysync_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)


def main(
    argv: Sequence[str] | None = None,
    *,
    plugins: PluginManager | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command line; return the exit status.

    ``plugins`` injects a plugin manager (tests, embedding) instead of loading the installed entry points.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has already printed the usage line
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    debug = bool(getattr(args, "debug", False))
    _configure_logging(debug, err)

    def manager() -> PluginManager:
        return plugins if plugins is not None else PluginManager()

    command = {"export": _export, "plugins": _plugins, "service": _service, "enroll": _enroll, "run": _run}[
        args.command
    ]
    try:
        return command(args, manager, out, err)
    except GrocerySyncError as exc:
        err.write(f"grocerysync-agent: error: {exc}\n")
        if debug:
            traceback.print_exc(file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.write("grocerysync-agent: interrupted; nothing from the unfinished run was recorded\n")
        return 130
