"""End to end: the real ``grocerysync-agent export`` process, the CSV connector and a real SFTP server."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import RunAgent, sftp_destination, write_job

from grocerysync.core.samples import POS_COLUMNS, write_catalogue_csv

pytestmark = pytest.mark.sshd

COLUMNS = {"item_id": "Item No", "gtin": "UPC", "name": "Description", "price": "Price", "department": "Dept"}

# A cp1252 export that nevertheless starts with a UTF-8 byte-order mark, as some POS systems write them.
BAD_EXPORT = (
    "Item No;UPC;Description;Price;Dept\r\n"
    "1001;036000291452;Café Bustelo Espresso;4,99;Grocery\r\n"  # row 2: good (decimal comma, é in cp1252)
    "1002;036000291453;Jalapeño Chips;2,49;Snacks\r\n"  # row 3: bad check digit
    "1003;4006381333931;Crème Fraîche;-1,00;Dairy\r\n"  # row 4: negative price
    "1004;96385074;;3,19;Dairy\r\n"  # row 5: no name
    '1005;012345678905;"Piñata ""Party"" Mix";5,00;Snacks\r\n'  # row 6: good
    "1006;0360002"  # row 7: truncated last line
)


def _remote_rows(remote: Path) -> list[dict[str, str]]:
    [feed] = sorted(remote.glob("*.csv"))
    return list(csv.DictReader(io.StringIO(feed.read_text(encoding="utf-8"))))


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "incoming"
    path.mkdir()
    return path


def test_bad_input_good_rows_go_through_and_each_bad_row_is_named(
    tmp_path: Path, remote: Path, sshd_server, run_agent: RunAgent
) -> None:
    export = tmp_path / "items.csv"
    export.write_bytes(b"\xef\xbb\xbf" + BAD_EXPORT.encode("cp1252"))
    job = write_job(
        tmp_path / "job.json",
        source={
            "plugin": "csv",
            "config": {"path": str(export), "columns": COLUMNS, "delimiter": ";", "decimal_comma": True},
        },
        destination=sftp_destination(sshd_server, remote),
    )
    run = run_agent("export", str(job), "--json")
    assert run.code == 1, run.stderr  # partially failed: some rows were rejected
    summary = run.summary
    assert (summary["read"], summary["sent"], summary["rejected"]) == (6, 2, 4)
    reasons = {r["ref"]: r["reason"] for r in summary["rejections"]}
    assert set(reasons) == {"row 3", "row 4", "row 5", "row 7"}
    assert "check digit" in reasons["row 3"]
    assert "price" in reasons["row 4"]
    assert "name" in reasons["row 5"]
    assert "truncated" in reasons["row 7"]
    rows = _remote_rows(remote)
    assert [(r["retailer_reference_code"], r["item_name"], r["price"]) for r in rows] == [
        ("1001", "Café Bustelo Espresso", "4.99"),
        ("1005", 'Piñata "Party" Mix', "5.00"),
    ]


def test_delta_runs_send_only_what_changed_and_removals(
    tmp_path: Path, remote: Path, sshd_server, run_agent: RunAgent
) -> None:
    export = write_catalogue_csv(tmp_path / "items.csv", 400)
    job = write_job(
        tmp_path / "job.json",
        source={"plugin": "csv", "config": {"path": str(export), "columns": POS_COLUMNS}},
        destination=sftp_destination(sshd_server, remote, format="jsonl"),
    )
    first = run_agent("export", str(job), "--json")
    assert first.code == 0, first.stderr
    assert first.summary["sent"] == 400
    [first_feed] = remote.glob("*.jsonl")

    second = run_agent("export", str(job), "--json")
    assert (second.summary["sent"], second.summary["unchanged"]) == (0, 400)
    assert "no feed file was needed" in second.summary["commit"]
    assert len(list(remote.glob("*.jsonl"))) == 1

    write_catalogue_csv(export, 400, change_every=100)  # items 100000, 100100, 100200, 100300
    lines = export.read_text(encoding="utf-8").splitlines(keepends=True)
    export.write_text("".join(line for line in lines if not line.startswith("100399,")), encoding="utf-8")
    third = run_agent("export", str(job), "--json")
    assert third.code == 0, third.stderr
    assert (third.summary["sent"], third.summary["removed"]) == (4, 1)
    [newest] = [p for p in remote.glob("*.jsonl") if p != first_feed]
    ops = [json.loads(line) for line in newest.read_text(encoding="utf-8").splitlines()]
    assert sorted(o["item"]["item_id"] for o in ops if o["op"] == "upsert") == ["100000", "100100", "100200", "100300"]
    assert [o["item_id"] for o in ops if o["op"] == "delete"] == ["100399"]


def test_full_run_resends_everything(tmp_path: Path, remote: Path, sshd_server, run_agent: RunAgent) -> None:
    export = write_catalogue_csv(tmp_path / "items.csv", 50)
    job = write_job(
        tmp_path / "job.json",
        source={"plugin": "csv", "config": {"path": str(export), "columns": POS_COLUMNS}},
        destination=sftp_destination(sshd_server, remote),
    )
    assert run_agent("export", str(job), "--json").summary["sent"] == 50
    again = run_agent("export", str(job), "--json", "--full")
    assert (again.summary["mode"], again.summary["sent"]) == ("full", 50)
    assert len(list(remote.glob("*_full_*.csv"))) == 1


def test_dry_run_sends_nothing_and_writes_a_preview(
    tmp_path: Path, remote: Path, sshd_server, run_agent: RunAgent
) -> None:
    export = write_catalogue_csv(tmp_path / "items.csv", 30)
    job = write_job(
        tmp_path / "job.json",
        source={"plugin": "csv", "config": {"path": str(export), "columns": POS_COLUMNS}},
        destination=sftp_destination(sshd_server, remote),
    )
    run = run_agent("export", str(job), "--json", "--dry-run")
    assert run.code == 0, run.stderr
    assert list(remote.iterdir()) == []
    preview = Path(run.summary["preview_path"])
    assert len(preview.read_text(encoding="utf-8").splitlines()) == 30
    # Nothing was recorded as sent: the real run sends everything.
    assert run_agent("export", str(job), "--json").summary["sent"] == 30


def test_missing_pos_file_is_one_clear_line(tmp_path: Path, remote: Path, sshd_server, run_agent: RunAgent) -> None:
    job = write_job(
        tmp_path / "job.json",
        source={"plugin": "csv", "config": {"path": str(tmp_path / "nope.csv"), "columns": POS_COLUMNS}},
        destination=sftp_destination(sshd_server, remote),
    )
    run = run_agent("export", str(job))
    assert run.code == 2
    assert "Traceback" not in run.stderr + run.stdout
    assert "POS export file not found" in run.stderr + run.stdout
    assert str(tmp_path / "nope.csv") in run.stderr + run.stdout


def test_unreachable_sftp_server_is_one_clear_line(tmp_path: Path, sshd_server, run_agent: RunAgent) -> None:
    import sshd as sshd_helper

    export = write_catalogue_csv(tmp_path / "items.csv", 10)
    closed_port = sshd_helper.free_port()
    destination = sftp_destination(sshd_server, tmp_path, max_attempts=2, backoff=0.1, connect_timeout=2)
    destination["config"]["port"] = closed_port
    job = write_job(
        tmp_path / "job.json",
        source={"plugin": "csv", "config": {"path": str(export), "columns": POS_COLUMNS}},
        destination=destination,
    )
    run = run_agent("export", str(job))
    assert run.code == 2
    output = run.stderr + run.stdout
    assert "Traceback" not in output
    assert f"127.0.0.1:{closed_port}" in output
    # The secret key never shows, whatever went wrong.
    key_body = sshd_server.client_key_text.splitlines()[1]
    assert key_body not in output
    assert not any(key_body in p.read_text(errors="ignore") for p in (tmp_path / "state").rglob("*") if p.is_file())


def test_plugins_command_lists_the_installed_plugins(run_agent: RunAgent) -> None:
    run = run_agent("plugins", "--json")
    assert run.code == 0, run.stderr
    listed = {(p["kind"], p["name"]): p["distribution"] for p in json.loads(run.stdout)["plugins"]}
    assert listed[("pos", "csv")] == "grocerysync-pos-csv"
    assert listed[("destination", "sftp")] == "grocerysync-dest-sftp"
    assert listed[("destination", "folder")] == "grocerysync-dest-folder"
