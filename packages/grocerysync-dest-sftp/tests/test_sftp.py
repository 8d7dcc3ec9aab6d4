"""The sftp destination against a real OpenSSH server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import asyncssh
import pytest
import sshd as sshd_helper
from grocerysync_dest_sftp import SftpConfig, SftpError, SftpSecrets, check, destination, open_writer
from grocerysync_dest_sftp.connection import connect
from grocerysync_dest_sftp.destination import _sftp_problem, _transfer_sizes
from grocerysync_dest_sftp.plugin import DESTINATION

from grocerysync.core.config import parse_config
from grocerysync.core.errors import ConfigError
from grocerysync.core.items import Item
from grocerysync.core.records import WriteContext

pytestmark = pytest.mark.sshd

ITEMS = [
    Item(item_id="A1", gtin="012345678905", name="Cola 12 oz", price="1.25", size="12 fl oz", snap_ebt=True),
    Item(item_id="B2", plu="4011", name="Bananas", price="0.59", sold_by_weight=True),
    Item(item_id="C3", name="No code", price="2.00"),
]


def config(server: sshd_helper.SshServer, remote: Path, **over: object) -> SftpConfig:
    data: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "username": "root",
        "remote_dir": str(remote),
        "host_key_fingerprint": server.host_key_fingerprint,
        "connect_timeout": 5,
        "backoff": 0.2,
    }
    data.update(over)
    return parse_config(SftpConfig, {k: v for k, v in data.items() if v is not None}, where="config")


def key_secrets(server: sshd_helper.SshServer) -> SftpSecrets:
    return SftpSecrets(private_key=server.client_key_text)


def context(tmp_path: Path, mode: str = "full", run_id: str = "0f3c9a7b-1111") -> WriteContext:
    work = tmp_path / f"work-{run_id}"
    work.mkdir(exist_ok=True)
    return WriteContext(job_name="Main St Instacart", run_id=run_id, mode=mode, work_dir=str(work))  # type: ignore[arg-type]


async def test_check_with_key_and_pinned_fingerprint(sshd, remote_dir):
    result = await check(config(sshd, remote_dir), key_secrets(sshd))
    assert result.ok, result.message
    assert sshd.host_key_fingerprint in result.message
    assert list(remote_dir.iterdir()) == []  # the probe file is gone


async def test_check_with_known_hosts_file(sshd, remote_dir):
    cfg = config(sshd, remote_dir, host_key_fingerprint=None, known_hosts=str(sshd.known_hosts_path))
    assert (await check(cfg, key_secrets(sshd))).ok


async def test_wrong_fingerprint_is_refused_and_shows_the_servers(sshd, remote_dir):
    result = await check(config(sshd, remote_dir, host_key_fingerprint="SHA256:" + "A" * 43), key_secrets(sshd))
    assert not result.ok
    assert "host key mismatch" in result.message
    assert sshd.host_key_fingerprint in result.message  # what to pin, if the change is genuine
    assert "\n" not in result.message


async def test_host_missing_from_known_hosts_says_how_to_add_it(sshd, remote_dir, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("[otherhost]:22 " + sshd.host_pub_line + "\n")
    result = await check(config(sshd, remote_dir, host_key_fingerprint=None, known_hosts=str(known)), key_secrets(sshd))
    assert not result.ok
    assert "unknown" in result.message
    assert "ssh-keyscan" in result.message
    assert sshd.host_key_fingerprint in result.message


async def test_changed_key_in_known_hosts_is_a_mismatch(sshd, remote_dir, tmp_path):
    other = tmp_path / "other_key"
    sshd_helper.keygen(other)
    pub = (tmp_path / "other_key.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[{sshd.host}]:{sshd.port} {pub[0]} {pub[1]}\n")
    result = await check(config(sshd, remote_dir, host_key_fingerprint=None, known_hosts=str(known)), key_secrets(sshd))
    assert not result.ok
    assert "mismatch" in result.message
    assert str(known) in result.message


async def test_missing_known_hosts_file_is_named(sshd, remote_dir, tmp_path):
    missing = tmp_path / "nope" / "known_hosts"
    result = await check(
        config(sshd, remote_dir, host_key_fingerprint=None, known_hosts=str(missing)), key_secrets(sshd)
    )
    assert not result.ok
    assert str(missing) in result.message
    assert "does not exist" in result.message


async def test_unknown_key_is_refused_without_leaking_it(sshd, remote_dir, tmp_path):
    stranger = sshd_helper.keygen(tmp_path / "stranger")
    result = await check(config(sshd, remote_dir), SftpSecrets(private_key=stranger))
    assert not result.ok
    assert "authentication refused for user 'root'" in result.message
    assert "public key" in result.message
    assert "PRIVATE KEY" not in result.message


async def test_encrypted_key_with_passphrase_logs_in(sshd, remote_dir, tmp_path):
    text = sshd_helper.keygen(tmp_path / "locked", passphrase="open sesame")
    authorized = sshd.workdir / "authorized_keys"
    original = authorized.read_text()
    authorized.write_text(original + (tmp_path / "locked.pub").read_text())
    try:
        secrets = SftpSecrets(private_key=text, private_key_passphrase="open sesame")
        assert (await check(config(sshd, remote_dir), secrets)).ok
    finally:
        authorized.write_text(original)
    with pytest.raises(ConfigError) as err:
        parse_config(SftpSecrets, {"private_key": text, "private_key_passphrase": "wrong"}, where="secrets")
    assert err.value.errors[0]["field"] == "secrets.private_key"
    assert "wrong" not in str(err.value)
    assert "open sesame" not in str(err.value)


async def test_password_login(sshd, password_user, tmp_path):
    if password_user is None:
        pytest.skip("password logins need a throwaway local account, which only root can create")
    cfg = config(sshd, password_user.home, username=password_user.name)
    assert (await check(cfg, SftpSecrets(password=password_user.password))).ok
    result = await check(cfg, SftpSecrets(password="not-" + password_user.password))
    assert not result.ok
    assert "password" in result.message
    assert password_user.password not in result.message


async def test_missing_remote_dir(sshd, tmp_path):
    result = await check(config(sshd, tmp_path / "absent"), key_secrets(sshd))
    assert not result.ok
    assert "does not exist" in result.message
    assert "absent" in result.message


async def test_unwritable_remote_dir(sshd, password_user, tmp_path):
    if password_user is None:
        pytest.skip("needs a non-root account (root may write anywhere)")
    result = await check(config(sshd, "/", username=password_user.name), SftpSecrets(password=password_user.password))
    assert not result.ok
    assert "not writable" in result.message


async def test_connection_refused_is_one_line():
    cfg = SftpConfig(
        host="127.0.0.1",
        port=sshd_helper.free_port(),
        username="u",
        remote_dir="/in",
        host_key_fingerprint="SHA256:" + "A" * 43,
        connect_timeout=3,
    )
    result = await check(cfg, SftpSecrets(password="pw"))
    assert not result.ok
    assert result.message.startswith(f"connection to 127.0.0.1:{cfg.port} refused")
    assert "\n" not in result.message
    assert "pw" not in result.message


async def test_dns_failure_is_named():
    cfg = SftpConfig(
        host="no-such-host.invalid", username="u", remote_dir="/in", host_key_fingerprint="SHA256:" + "A" * 43
    )
    result = await check(cfg, SftpSecrets(password="pw"))
    assert not result.ok
    assert "cannot resolve host name 'no-such-host.invalid'" in result.message


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


async def test_full_csv_feed_lands_complete(sshd, remote_dir, tmp_path):
    cfg = config(sshd, remote_dir, file_prefix="s12_")
    async with DESTINATION.open(cfg, key_secrets(sshd), context(tmp_path)) as writer:
        results = await writer.write(ITEMS)
        line = await writer.commit()
    assert [r.ok for r in results] == [True, True, False]
    assert "lookup code" in (results[2].error or "")
    files = list(remote_dir.iterdir())
    assert len(files) == 1
    assert files[0].name.startswith("s12_main-st-instacart_full_")
    assert files[0].suffix == ".csv"
    assert line.startswith(f"uploaded {remote_dir}/{files[0].name} (2 items, ")
    rows = read_csv(files[0])
    assert [(r["retailer_reference_code"], r["lookup_code"], r["price"]) for r in rows] == [
        ("A1", "012345678905", "1.25"),
        ("B2", "4011", "0.59"),
    ]
    assert rows[1]["cost_unit"] == "lb"
    assert rows[0]["snap_eligible"] == "TRUE"
    assert names(Path(context(tmp_path).work_dir)) == []  # the spool file is gone


async def test_delta_jsonl_feed_with_deletions(sshd, remote_dir, tmp_path):
    cfg = config(sshd, remote_dir, format="jsonl")
    async with DESTINATION.open(cfg, key_secrets(sshd), context(tmp_path, "delta")) as writer:
        await writer.write(ITEMS[:2])
        await writer.delete(["Z9"])
        await writer.commit()
    (feed,) = remote_dir.iterdir()
    assert "_delta_" in feed.name
    assert feed.suffix == ".jsonl"
    lines = [json.loads(x) for x in feed.read_text().splitlines()]
    assert [Item.model_validate(x["item"]) for x in lines[:2]] == ITEMS[:2]
    assert lines[2] == {"op": "delete", "item_id": "Z9"}


async def test_names_are_unique_across_runs(sshd, remote_dir, tmp_path):
    cfg = config(sshd, remote_dir)
    for run in ("aaaaaaaa-1", "bbbbbbbb-2"):
        async with DESTINATION.open(cfg, key_secrets(sshd), context(tmp_path, run_id=run)) as writer:
            await writer.write(ITEMS[:1])
            await writer.commit()
    assert len({p.name for p in remote_dir.iterdir()}) == 2


async def test_abort_without_commit_leaves_nothing(sshd, remote_dir, tmp_path):
    ctx = context(tmp_path)

    async def cancelled_run() -> None:
        async with DESTINATION.open(config(sshd, remote_dir), key_secrets(sshd), ctx) as writer:
            await writer.write(ITEMS)
            raise RuntimeError("the run was cancelled")

    with pytest.raises(RuntimeError):
        await cancelled_run()
    assert names(remote_dir) == []
    assert names(Path(ctx.work_dir)) == []


async def test_upload_is_atomic_and_replaces_a_leftover_part(sshd, remote_dir, tmp_path):
    ctx = context(tmp_path)
    async with open_writer(config(sshd, remote_dir), key_secrets(sshd), ctx) as writer:
        (remote_dir / f".{writer.name}.part").write_text("half a file from a dropped upload")
        await writer.write(ITEMS[:2])
        await writer.commit()
    names = sorted(p.name for p in remote_dir.iterdir())
    assert names == [writer.name]  # no .part left
    assert len(read_csv(remote_dir / writer.name)) == 2


class _Attempts(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.failed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "upload attempt 1 of" in record.getMessage():
            self.failed.set()


async def test_upload_retries_until_the_server_is_back(sshd, remote_dir, tmp_path):
    cfg = config(sshd, remote_dir, backoff=0.5, max_attempts=8)
    handler = _Attempts()
    logger = logging.getLogger("grocerysync_dest_sftp.destination")
    logger.addHandler(handler)
    try:
        async with open_writer(cfg, key_secrets(sshd), context(tmp_path)) as writer:
            await writer.write(ITEMS[:2])
            sshd.stop()
            upload = asyncio.create_task(writer.commit())
            await asyncio.wait_for(handler.failed.wait(), 30)
            await asyncio.to_thread(sshd.start)
            line = await upload
    finally:
        logger.removeHandler(handler)
    assert writer.attempts >= 2
    assert line.startswith("uploaded ")
    (feed,) = remote_dir.iterdir()
    assert len(read_csv(feed)) == 2


async def test_a_connection_dropped_during_the_upload_is_retried(sshd, remote_dir, tmp_path):
    # Big enough (about 6 MB) that the upload is still going when the server side of the session is killed.
    items = [
        Item(item_id=f"N{n:06d}", gtin="012345678905", name=f"Item number {n} with a longer name", price="1.25")
        for n in range(60_000)
    ]
    cfg = config(sshd, remote_dir, backoff=0.2, max_attempts=5)

    async def drop_the_session_mid_upload() -> None:
        for _ in range(5000):  # the part file appears when the upload opens it (polled: a folder sets no event)
            if any(p.name.endswith(".part") for p in remote_dir.iterdir()):
                break
            await asyncio.sleep(0.002)
        for pid in sshd_helper._descendants(sshd.process.pid):  # the session, not the listener
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async with open_writer(cfg, key_secrets(sshd), context(tmp_path)) as writer:
        await writer.write(items)
        dropper = asyncio.create_task(drop_the_session_mid_upload())
        line = await asyncio.wait_for(writer.commit(), 60)
        await dropper
    assert line.startswith("uploaded ")
    assert writer.attempts >= 2
    (feed,) = remote_dir.iterdir()  # the dropped attempt's part file is gone too
    assert len(read_csv(feed)) == len(items)


@pytest.fixture
def logins(monkeypatch):
    """Every login the destination makes, as the connection it got (or the error)."""
    made: list[object] = []
    real = destination.connect

    async def counted(*args, **kwargs):
        try:
            conn, fingerprint = await real(*args, **kwargs)
        except Exception as exc:
            made.append(exc)
            raise
        made.append(conn)
        return conn, fingerprint

    monkeypatch.setattr(destination, "connect", counted)
    return made


async def _session_opened(writer) -> None:
    """Wait for the login the first write started to finish (it runs while the run goes on)."""
    early = writer._early
    assert early is not None, "the first write did not start the login"
    await asyncio.wait_for(asyncio.shield(early), 20)


async def test_the_first_write_logs_in_and_the_commit_uploads_over_that_session(sshd, remote_dir, tmp_path, logins):
    async with open_writer(config(sshd, remote_dir), key_secrets(sshd), context(tmp_path)) as writer:
        assert logins == []  # opening the feed connects nowhere
        await writer.write(ITEMS[:2])
        await _session_opened(writer)
        assert len(logins) == 1
        await writer.write(ITEMS[2:])
        line = await writer.commit()
    assert line.startswith("uploaded ")
    assert len(logins) == 1  # no second login
    assert writer.attempts == 1
    (feed,) = remote_dir.iterdir()
    assert [row["retailer_reference_code"] for row in read_csv(feed)] == ["A1", "B2"]
    assert logins[0].is_closed()


async def test_a_run_with_nothing_to_send_never_logs_in(sshd, remote_dir, tmp_path, logins):
    async with open_writer(config(sshd, remote_dir), key_secrets(sshd), context(tmp_path, mode="delta")) as writer:
        line = await writer.commit()
    assert "nothing" in line
    assert logins == []
    assert names(remote_dir) == []


async def test_a_session_dropped_while_the_run_goes_on_is_replaced_at_once(sshd, remote_dir, tmp_path, logins):
    # A backoff of a minute: the replacement login must not wait for it (the test would time out).
    cfg = config(sshd, remote_dir, backoff=60, max_attempts=2)
    async with open_writer(cfg, key_secrets(sshd), context(tmp_path)) as writer:
        await writer.write(ITEMS)
        await _session_opened(writer)
        for pid in sshd_helper._descendants(sshd.process.pid):  # the session, not the listener
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        line = await asyncio.wait_for(writer.commit(), 20)
    assert line.startswith("uploaded ")
    assert len(logins) == 2
    assert writer.attempts == 2
    (feed,) = remote_dir.iterdir()
    assert len(read_csv(feed)) == 2


async def test_a_run_that_fails_closes_the_session_it_opened(sshd, remote_dir, tmp_path, logins):
    ctx = context(tmp_path)

    async def failed_run() -> None:
        async with open_writer(config(sshd, remote_dir), key_secrets(sshd), ctx) as writer:
            await writer.write(ITEMS)
            await _session_opened(writer)
            raise RuntimeError("the run failed")

    with pytest.raises(RuntimeError):
        await failed_run()
    (conn,) = logins
    await asyncio.wait_for(conn.wait_closed(), 10)
    assert names(remote_dir) == []
    assert names(Path(ctx.work_dir)) == []


async def test_a_run_that_fails_before_the_login_is_done_leaves_no_login_behind(sshd, remote_dir, tmp_path, logins):
    writers = []

    async def failed_run() -> None:
        async with open_writer(config(sshd, remote_dir), key_secrets(sshd), context(tmp_path)) as writer:
            writers.append(writer)
            await writer.write(ITEMS)
            raise RuntimeError("the run failed at once")  # the login has not even connected yet

    with pytest.raises(RuntimeError):
        await failed_run()
    assert writers[0]._early is None
    for conn in logins:  # cancelled before it logged in, or closed after
        assert isinstance(conn, asyncssh.SSHClientConnection)
        await asyncio.wait_for(conn.wait_closed(), 10)


async def test_a_refused_login_is_reported_by_the_commit_in_one_line(sshd, remote_dir, tmp_path, logins):
    wrong = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    cfg = config(sshd, remote_dir, max_attempts=3, backoff=60)
    async with open_writer(cfg, SftpSecrets(private_key=wrong), context(tmp_path)) as writer:
        await writer.write(ITEMS)
        with pytest.raises(SftpError, match="authentication refused for user 'root'") as caught:
            await asyncio.wait_for(writer.commit(), 20)
    assert "\n" not in str(caught.value)
    assert writer.attempts == 1  # not retried: a refused key stays refused
    assert len(logins) == 2  # the one during the run, then the commit's own, which says why


async def test_unreachable_server_fails_commit_with_one_line(sshd, remote_dir, tmp_path):
    cfg = config(sshd, remote_dir, port=sshd_helper.free_port(), max_attempts=2, backoff=0)
    async with open_writer(cfg, key_secrets(sshd), context(tmp_path)) as writer:
        await writer.write(ITEMS[:1])
        with pytest.raises(SftpError) as err:
            await writer.commit()
    assert "after 2 attempts" in str(err.value)
    assert "refused" in str(err.value)
    assert err.value.retryable
    assert "\n" not in str(err.value)


async def test_aes_gcm_is_preferred(sshd, remote_dir):
    conn, _ = await connect(config(sshd, remote_dir), key_secrets(sshd))
    async with conn:
        assert conn.get_extra_info("send_cipher") == "aes256-gcm@openssh.com"
        assert conn.get_extra_info("recv_cipher") == "aes256-gcm@openssh.com"


@pytest.mark.parametrize("cipher", ["chacha20-poly1305@openssh.com", "aes128-ctr"])
async def test_a_server_without_aes_gcm_still_gets_the_feed(cipher, remote_dir, tmp_path):
    server = sshd_helper.SshServer.create(tmp_path / "sshd")
    server.config_path.write_text(server.config_path.read_text() + f"Ciphers {cipher}\n")
    await asyncio.to_thread(server.start)
    try:
        cfg = config(server, remote_dir)
        conn, _ = await connect(cfg, key_secrets(server))
        async with conn:
            assert conn.get_extra_info("send_cipher") == cipher
        async with open_writer(cfg, key_secrets(server), context(tmp_path)) as writer:
            await writer.write(ITEMS[:2])
            await writer.commit()
    finally:
        server.stop()
    (feed,) = remote_dir.iterdir()
    assert len(read_csv(feed)) == 2


@pytest.mark.parametrize(
    ("limits", "sizes"),
    [
        (SimpleNamespace(max_write_len=261120), (128 * 1024, 2)),  # OpenSSH's limits@openssh.com
        (SimpleNamespace(max_write_len=100 * 1024), (100 * 1024, 2)),
        (SimpleNamespace(max_write_len=16 * 1024), (64 * 1024, 4)),  # what asyncssh says when the server does not
        (None, (64 * 1024, 4)),  # an asyncssh without limits
    ],
)
def test_upload_block_size_follows_the_server_within_bounds(limits, sizes):
    sftp = SimpleNamespace(limits=limits) if limits is not None else SimpleNamespace()
    assert _transfer_sizes(sftp) == sizes  # type: ignore[arg-type]


async def test_a_large_feed_arrives_intact(sshd, remote_dir, tmp_path):
    # Several megabytes: many full-size writes in flight at once, and a last partial one.
    items = [
        Item(item_id=f"{n:07d}", plu="4011", name=f"Item {n} " + "x" * (n % 97), price="1.99") for n in range(40_000)
    ]
    async with open_writer(config(sshd, remote_dir), key_secrets(sshd), context(tmp_path)) as writer:
        for start in range(0, len(items), 1000):
            await writer.write(items[start : start + 1000])
        spooled = writer.spool_path.read_bytes()
        await writer.commit()
    (feed,) = remote_dir.iterdir()
    assert feed.read_bytes() == spooled
    assert len(spooled) > 4 * 256 * 1024


@pytest.mark.parametrize("error", [asyncssh.SFTPConnectionLost("gone"), asyncssh.SFTPNoConnection("not open")])
def test_a_connection_lost_during_sftp_is_retryable(sshd, remote_dir, error):
    problem = _sftp_problem(error, config(sshd, remote_dir), "uploading feed.csv")
    assert problem.retryable
    assert "lost" in str(problem)
    assert not _sftp_problem(asyncssh.SFTPPermissionDenied("denied"), config(sshd, remote_dir), "x").retryable
