"""The grocerysync-agent command line: output, exit codes, and one-line errors without tracebacks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ListSource, RecordingDestination, job_data

from grocerysync.agent.cli import main
from grocerysync.core.manager import LoadFailure, PluginManager


def run(argv: list[str], plugins: PluginManager | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, plugins=plugins, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write_job(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job_data(**changes)))
    return path


@pytest.fixture
def state_args(tmp_path: Path) -> list[str]:
    return ["--state-dir", str(tmp_path / "state")]


def test_export_prints_a_readable_summary(tmp_path: Path, plugins: PluginManager, state_args: list[str]) -> None:
    code, out, err = run(["export", str(write_job(tmp_path)), *state_args], plugins)
    assert code == 0, err
    assert "Export 'store 1 -> web' (delta) succeeded" in out
    assert "sent 50" in out
    assert "destination: committed 50 changes" in out
    assert "s3cr3t" not in out + err


def test_export_json_parses_and_second_run_sends_nothing(
    tmp_path: Path, plugins: PluginManager, state_args: list[str]
) -> None:
    job = str(write_job(tmp_path))
    code, out, _ = run(["export", job, "--json", *state_args], plugins)
    first = json.loads(out)
    assert code == 0
    assert (first["status"], first["sent"]) == ("succeeded", 50)
    code, out, _ = run(["export", job, "--json", *state_args], plugins)
    second = json.loads(out)
    assert (second["sent"], second["unchanged"]) == (0, 50)
    code, out, _ = run(["export", job, "--json", "--full", *state_args], plugins)
    assert json.loads(out)["sent"] == 50


def test_state_dir_defaults_to_agent_home(
    tmp_path: Path, plugins: PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "agent-home"
    monkeypatch.setenv("GROCERYSYNC_AGENT_HOME", str(home))
    code, out, _ = run(["export", str(write_job(tmp_path)), "--json"], plugins)
    assert code == 0
    assert json.loads(out)["run_dir"].startswith(str(home))
    if os.name == "posix":
        assert (home.stat().st_mode & 0o777) == 0o700


def test_dry_run_flag(
    tmp_path: Path, plugins: PluginManager, dest: RecordingDestination, state_args: list[str]
) -> None:
    code, out, _ = run(["export", str(write_job(tmp_path)), "--dry-run", *state_args], plugins)
    assert code == 0
    assert "would send 50" in out
    assert "preview of what would be sent" in out
    assert dest.writes == []


def test_partial_failure_exits_1(
    tmp_path: Path, plugins: PluginManager, source: ListSource, state_args: list[str]
) -> None:
    source.rows[0]["price"] = "-1"
    code, out, _ = run(["export", str(write_job(tmp_path)), *state_args], plugins)
    assert code == 1
    assert "PARTIALLY FAILED" in out
    assert "row 2 (item I00001): price" in out


def test_failed_run_exits_2_with_one_line(
    tmp_path: Path, plugins: PluginManager, dest: RecordingDestination, state_args: list[str]
) -> None:
    dest.open_error = OSError("No route to host")
    code, _, err = run(["export", str(write_job(tmp_path)), *state_args], plugins)
    assert code == 2
    assert err.strip().splitlines() == [
        "grocerysync-agent: error: destination 'recorder' could not be opened: OSError: No route to host; "
        "check that it is reachable and its settings are right (try the plugin's check)"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"name": "x",\n  "source": }', "is not valid JSON: Expecting value at line 2, column 13"),
        (json.dumps(job_data(destination={"config": {}})), "invalid job in"),
        (json.dumps(job_data(filters=[{"field": "colour", "op": "eq", "value": 1}])), "filters.0.field"),
    ],
)
def test_bad_job_files_are_one_line(
    tmp_path: Path, plugins: PluginManager, state_args: list[str], content: str, expected: str
) -> None:
    path = tmp_path / "job.json"
    path.write_text(content)
    code, out, err = run(["export", str(path), *state_args], plugins)
    assert code == 2
    assert out == ""
    assert expected in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_invalid_job_names_the_field(tmp_path: Path, plugins: PluginManager, state_args: list[str]) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job_data(destination={"config": {}})))
    _, _, err = run(["export", str(path), *state_args], plugins)
    assert "destination.plugin: Field required" in err


def test_invalid_plugin_config_and_unknown_plugin(
    tmp_path: Path, plugins: PluginManager, state_args: list[str]
) -> None:
    code, _, err = run(["export", str(write_job(tmp_path, source={"plugin": "list"})), *state_args], plugins)
    assert code == 2
    assert "invalid source.config: path: Field required" in err
    code, _, err = run(["export", str(write_job(tmp_path, source={"plugin": "nope"})), *state_args], plugins)
    assert code == 2
    assert "no POS connector called 'nope' is installed (installed: list)" in err
    assert "Traceback" not in err


def test_missing_job_file(tmp_path: Path, plugins: PluginManager) -> None:
    code, _, err = run(["export", str(tmp_path / "missing.json")], plugins)
    assert code == 2
    assert "missing.json does not exist" in err


def test_plugins_command(plugins: PluginManager) -> None:
    code, out, _ = run(["plugins"], plugins)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "DISTRIBUTION", "VERSION"]
    assert lines[1].split() == ["pos", "list", "grocerysync-test-plugins", "1.2.3"]
    assert any(line.split()[:2] == ["destination", "recorder"] for line in lines)
    plugins.failures.append(LoadFailure("broken", "grocerysync-pos-broken", "ImportError: no module named x"))
    code, out, err = run(["plugins", "--json"], plugins)
    doc = json.loads(out)
    assert code == 1
    assert {"kind": "transform", "name": "suffix", "distribution": "grocerysync-test-plugins", "version": "1.2.3"} in (
        doc["plugins"]
    )
    assert doc["failures"] == [
        {"entry_point": "broken", "distribution": "grocerysync-pos-broken", "error": "ImportError: no module named x"}
    ]
    code, out, err = run(["plugins"], plugins)
    assert code == 1
    assert "plugin 'broken' from distribution 'grocerysync-pos-broken' failed to load" in err


def _agent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GROCERYSYNC_DISABLE_PLUGIN_AUTOLOAD": "1", "GROCERYSYNC_AGENT_HOME": str(cwd / "home")}
    return subprocess.run(
        [sys.executable, "-m", "grocerysync.agent", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


def test_real_process_reports_errors_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text(json.dumps(job_data()))
    result = _agent("export", "job.json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "grocerysync-agent: error: no POS connector called 'list' is installed (installed: none); "
        "install the plugin that provides it\n"
    )
    debug = _agent("export", "job.json", "--debug", cwd=tmp_path)
    assert "Traceback" in debug.stderr
    listing = _agent("plugins", "--json", cwd=tmp_path)
    assert listing.returncode == 0
    assert json.loads(listing.stdout) == {"plugins": [], "failures": []}
