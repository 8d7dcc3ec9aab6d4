"""Running as a service: the systemd unit, the Windows command lines, install/uninstall/status, stop requests."""

from __future__ import annotations

import getpass
import io
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from grocerysync.agent.cli import main
from grocerysync.agent.service import (
    Command,
    Plan,
    ServiceError,
    ServiceSpec,
    control,
    execute,
    systemd,
    windows,
    winhost,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd units are installed on Linux")


def spec(**changes: object) -> ServiceSpec:
    values: dict[str, object] = {
        "python": Path("/opt/grocerysync/venv/bin/python"),
        "state_dir": Path("/var/lib/grocerysync-agent"),
    }
    values.update(changes)
    return ServiceSpec(**values)  # type: ignore[arg-type]


def settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# -- the systemd unit ---------------------------------------------------------------


def test_the_unit_runs_this_environment_s_agent_hardened() -> None:
    unit = settings(systemd.render_unit(spec()))
    assert unit["ExecStart"] == [
        "/opt/grocerysync/venv/bin/python -m grocerysync.agent run --state-dir /var/lib/grocerysync-agent"
    ]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "Restart": "on-failure",
        # A revoked agent (exit status 3) is not restarted: only enrolling again helps.
        "RestartPreventExitStatus": "3",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
        "DynamicUser": "yes",
        "StateDirectory": "grocerysync-agent",
        "WantedBy": "multi-user.target",
    }.items():
        assert unit[key] == [value], key
    assert "GROCERYSYNC_AGENT_HOME=/var/lib/grocerysync-agent" in unit["Environment"]
    assert "User" not in unit


def test_a_named_account_gets_write_access_to_its_state_dir_only() -> None:
    unit = settings(systemd.render_unit(spec(user="gsagent", state_dir=Path("/srv/grocerysync"))))
    assert unit["User"] == ["gsagent"]
    assert unit["ReadWritePaths"] == ["/srv/grocerysync"]
    assert "DynamicUser" not in unit
    assert unit["ProtectSystem"] == ["strict"]


def test_paths_with_spaces_and_specifiers_are_quoted_for_systemd() -> None:
    text = systemd.render_unit(
        spec(python=Path("/opt/gs venv/bin/python"), state_dir=Path("/srv/store 5%/$state"), user="gsagent")
    )
    unit = settings(text)
    assert unit["ExecStart"] == [
        '"/opt/gs venv/bin/python" -m grocerysync.agent run --state-dir "/srv/store 5%%/$$state"'
    ]
    assert unit["ReadWritePaths"] == ['"/srv/store 5%%/$state"']


def test_a_venv_under_home_keeps_home_readable() -> None:
    unit = settings(systemd.render_unit(spec(python=Path("/home/tech/venv/bin/python"), user="tech")))
    assert unit["ProtectHome"] == ["read-only"]
    plan = systemd.plan_install(spec(python=Path("/home/tech/venv/bin/python")), Path("/x"), have_systemd=False)
    assert any("inside a home directory" in note for note in plan.notes)


def test_units_that_cannot_work_are_refused_with_the_fix() -> None:
    with pytest.raises(ServiceError, match=r"must be under /var/lib .*give --state-dir /var/lib/grocerysync-agent"):
        systemd.render_unit(spec(state_dir=Path("/srv/agent")))
    with pytest.raises(ServiceError, match="must be absolute"):
        systemd.render_unit(spec(state_dir=Path("state"), user="gsagent"))
    with pytest.raises(ServiceError, match="line break"):
        systemd.render_unit(spec(user="gs\nExecStartPre=/bin/evil"))


@linux_only
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("user", [None, "gsagent"])
def test_systemd_analyze_accepts_the_unit(tmp_path: Path, user: str | None) -> None:
    state = Path("/var/lib/grocerysync-agent") if user is None else tmp_path / "my state"
    unit = systemd.unit_path(tmp_path, "grocerysync-agent")
    unit.write_text(systemd.render_unit(spec(python=Path(sys.executable), state_dir=state, user=user)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    # verify exits 0 even for settings it ignores; each of those is a "<file>:<line>:" warning.
    warnings = [line for line in done.stderr.splitlines() if re.match(rf"{re.escape(str(unit))}:\d+:", line)]
    assert done.returncode == 0, done.stderr
    assert warnings == []


# -- install / uninstall / status on Linux ------------------------------------------------------


@linux_only
def test_install_status_uninstall_round_trip(tmp_path: Path) -> None:
    units, state = tmp_path / "units", tmp_path / "state"
    args = ["--unit-dir", str(units), "--state-dir", str(state), "--user", getpass.getuser()]

    assert run_cli(["service", "status", *args])[0] == 1

    code, out, err = run_cli(["service", "install", *args])
    assert code == 0, err
    unit_file = units / "grocerysync-agent.service"
    text = unit_file.read_text()
    assert f"{sys.executable} -m grocerysync.agent run --state-dir {state}" in text
    assert state.is_dir()
    assert state.stat().st_mode & 0o777 == 0o700
    # The unit is not where systemd reads units, so systemctl is not run: the technician is told what to do.
    assert "run these yourself" in out
    assert "systemctl enable --now grocerysync-agent.service" in out

    code, out, _ = run_cli(["service", "status", *args])
    assert code == 0
    assert "grocerysync-agent: installed" in out

    (units / "multi-user.target.wants").mkdir()
    (units / "multi-user.target.wants" / "grocerysync-agent.service").symlink_to(unit_file)
    (state / "spool.sqlite").write_text("kept")
    code, out, err = run_cli(["service", "uninstall", *args])
    assert code == 0, err
    assert not unit_file.exists()
    assert not (units / "multi-user.target.wants" / "grocerysync-agent.service").is_symlink()
    assert (state / "spool.sqlite").read_text() == "kept"
    assert "was kept" in out
    assert run_cli(["service", "status", *args])[0] == 1


@linux_only
def test_dry_run_prints_the_unit_and_changes_nothing(tmp_path: Path) -> None:
    units = tmp_path / "units"
    code, out, _ = run_cli(
        ["service", "install", "--dry-run", "--unit-dir", str(units), "--state-dir", "/var/lib/gs-test"]
    )
    assert code == 0
    assert f"write {units / 'grocerysync-agent.service'}:" in out
    assert "    StateDirectory=gs-test" in out
    assert "systemctl daemon-reload" in out
    assert not units.exists()


@linux_only
def test_install_problems_are_one_line_errors(tmp_path: Path) -> None:
    code, _, err = run_cli(["service", "install", "--unit-dir", str(tmp_path), "--state-dir", str(tmp_path / "s")])
    assert code == 2
    assert err.startswith("grocerysync-agent: error: with no --user the service runs as a dynamic user")
    assert "Traceback" not in err
    blocked = tmp_path / "file"
    blocked.write_text("")
    args = ["--unit-dir", str(blocked / "units"), "--state-dir", str(tmp_path / "s"), "--user", getpass.getuser()]
    code, _, err = run_cli(["service", "install", *args])
    assert code == 2
    assert "cannot write" in err
    assert "run it as root (sudo)" in err


def test_plan_commands_run_in_order_and_a_failure_names_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    append = "import sys, pathlib; p = pathlib.Path(sys.argv[1]); p.write_text(p.read_text() + sys.argv[2]) "
    marker.write_text("")
    plan = Plan(
        first=[Command([sys.executable, "-c", append, str(marker), "a"], "first step")],
        writes=[(tmp_path / "unit", "text")],
        commands=[
            Command([sys.executable, "-c", append, str(marker), "b"], "second step"),
            Command([sys.executable, "-c", "import sys; sys.exit(5)"], "tolerated step", ok=(0, 5)),
        ],
    )
    out = io.StringIO()
    execute(plan, out)
    assert marker.read_text() == "ab"
    assert "second step: done" in out.getvalue()
    failing = Plan(commands=[Command([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], "reload")])
    with pytest.raises(ServiceError, match=r"could not reload: .* exited with 3: boom"):
        execute(failing, io.StringIO())


# -- Windows command lines (pure; checked on any OS) ----------------------------------------------


def test_the_windows_service_runs_the_base_interpreter_not_the_venv_launcher() -> None:
    python = windows.service_python(
        prefix=r"C:\Program Files\GrocerySync\venv",
        base_prefix=r"C:\Program Files\Python311",
        executable=r"C:\Program Files\GrocerySync\venv\Scripts\python.exe",
        base_executable=r"C:\Program Files\Python311\python.exe",
    )
    assert python == PureWindowsPath(r"C:\Program Files\Python311\python.exe")
    # Started from pythonw.exe: still python.exe (under pythonw sys.stdout is None).
    assert windows.service_python(r"C:\Py", r"C:\Py", r"C:\Py\pythonw.exe", r"C:\Py\pythonw.exe") == PureWindowsPath(
        r"C:\Py\python.exe"
    )
    with pytest.raises(ServiceError, match="Microsoft Store Python"):
        windows.service_python(
            r"C:\v", r"C:\s", r"C:\v\Scripts\python.exe", r"C:\Users\t\AppData\Local\Microsoft\WindowsApps\python.exe"
        )


def _layout() -> windows.WindowsLayout:
    site = PureWindowsPath(r"C:\Program Files\GrocerySync\venv\Lib\site-packages")
    return windows.WindowsLayout(
        python=PureWindowsPath(r"C:\Program Files\Python311\python.exe"),
        host=site / "grocerysync" / "agent" / "service" / "winhost.py",
        site_packages=site,
    )


def _win_spec(**changes: object) -> ServiceSpec:
    changes.setdefault("state_dir", PureWindowsPath(r"C:\ProgramData\GrocerySync\agent"))
    return spec(**changes)


def test_bin_path_quotes_every_path_with_spaces() -> None:
    layout = _layout()
    line = windows.bin_path(
        layout.python, layout.host, layout.site_packages, _win_spec(state_dir=PureWindowsPath(r"C:\Store Data\agent"))
    )
    assert line == (
        r'"C:\Program Files\Python311\python.exe" -I '
        r'"C:\Program Files\GrocerySync\venv\Lib\site-packages\grocerysync\agent\service\winhost.py" '
        r'--site-packages "C:\Program Files\GrocerySync\venv\Lib\site-packages" '
        r'--name grocerysync-agent --state-dir "C:\Store Data\agent"'
    )


def test_windows_install_registers_a_restarting_least_privileged_service() -> None:
    plan = windows.plan_install(_win_spec(), _layout())
    argvs = [c.argv for c in plan.commands]
    create = argvs[0]
    assert create[:3] == ["sc.exe", "create", "grocerysync-agent"]
    # sc.exe wants "option=" and its value as separate words.
    opts = dict(zip(create[3::2], create[4::2], strict=True))
    assert opts["binPath="].startswith(r'"C:\Program Files\Python311\python.exe" -I ')
    assert opts["start="] == "delayed-auto"
    assert opts["obj="] == r"NT SERVICE\grocerysync-agent"
    assert ["sc.exe", "failureflag", "grocerysync-agent", "1"] in argvs
    failure = next(a for a in argvs if a[1] == "failure")
    assert failure[failure.index("actions=") + 1].startswith("restart/")
    icacls = next(a for a in argvs if a[0] == "icacls")
    assert icacls[1] == r"C:\ProgramData\GrocerySync\agent"
    assert "/inheritance:r" in icacls
    assert r"NT SERVICE\grocerysync-agent:(OI)(CI)M" in icacls
    assert argvs[-1] == ["sc.exe", "start", "grocerysync-agent"]
    assert [(str(d), owner) for d, owner in plan.mkdirs] == [(r"C:\ProgramData\GrocerySync\agent", None)]
    assert windows.plan_install(_win_spec(), _layout(), start=False).commands[-1].argv[1] != "start"


def test_windows_accounts_that_need_a_password_are_refused() -> None:
    with pytest.raises(ServiceError, match="account with a password"):
        windows.plan_install(_win_spec(user=r"STORE\manager"), _layout())
    plan = windows.plan_install(_win_spec(user=r"NT AUTHORITY\LocalService"), _layout())
    assert plan.commands[0].argv[plan.commands[0].argv.index("obj=") + 1] == r"NT AUTHORITY\LocalService"
    windows.plan_install(_win_spec(user="STORE\\gs-agent$"), _layout())  # a managed service account


def test_windows_uninstall_tolerates_a_stopped_service_and_keeps_state() -> None:
    plan = windows.plan_uninstall(_win_spec())
    stop, delete = plan.commands
    assert stop.argv == ["sc.exe", "stop", "grocerysync-agent"]
    assert windows.ERROR_SERVICE_NOT_ACTIVE in stop.ok
    assert delete.argv == ["sc.exe", "delete", "grocerysync-agent"]
    assert any("was kept" in n for n in plan.notes)


def test_sc_query_output_is_read() -> None:
    running = """
SERVICE_NAME: grocerysync-agent
        TYPE               : 10  WIN32_OWN_PROCESS
        STATE              : 4  RUNNING
                                (STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)
        WIN32_EXIT_CODE    : 0  (0x0)
"""
    assert windows.parse_query(0, running) == (True, "RUNNING")
    missing = "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\n\nThe specified service does not exist."
    assert windows.parse_query(1060, missing) == (False, "not installed")
    assert windows.parse_query(5, "[SC] OpenService FAILED 5:\n\nAccess is denied.") == (
        False,
        "unknown (Access is denied.)",
    )


def test_the_windows_host_reads_its_command_line_and_loads_the_venv(tmp_path: Path) -> None:
    args = winhost.parse_args(["--site-packages", r"C:\v\Lib\site-packages", "--name", "gs", "--state-dir", r"C:\s"])
    assert (args.site_packages, args.name, args.state_dir) == (r"C:\v\Lib\site-packages", "gs", r"C:\s")
    # The venv's .pth files must run (pywin32 adds its DLL directory that way): checked in a fresh interpreter.
    site_dir = tmp_path / "site packages"
    site_dir.mkdir()
    (site_dir / "marker_pkg.py").write_text("VALUE = 42\n")
    (site_dir / "setup.pth").write_text("import os; os.environ['GS_PTH_RAN'] = '1'\n")
    code = (
        "import importlib.util, os, sys;"
        f"spec = importlib.util.spec_from_file_location('winhost', {str(Path(winhost.__file__))!r});"
        "host = importlib.util.module_from_spec(spec); spec.loader.exec_module(host);"
        f"host.bootstrap({str(site_dir)!r});"
        "import marker_pkg; print(marker_pkg.VALUE, os.environ.get('GS_PTH_RAN'))"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42", "1"]


# -- stopping -----------------------------------------------------------------------


def test_sigterm_becomes_a_stop_request() -> None:
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    control.reset()
    try:
        control.install_signal_handlers()
        assert not control.stop_requested()
        assert control.wait_for_stop(0.01) is False
        signal.raise_signal(signal.SIGTERM)
        assert control.stop_requested()
        assert control.wait_for_stop(0) is True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        control.reset()
    assert not control.stop_requested()


def test_the_service_runs_the_foreground_run_command() -> None:
    assert spec(state_dir=PurePosixPath("/var/lib/x")).run_args() == [
        "-m",
        "grocerysync.agent",
        "run",
        "--state-dir",
        "/var/lib/x",
    ]
