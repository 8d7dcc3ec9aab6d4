"""Key rings and rotate-keys: re-encrypt every stored secret under a new key while the hub keeps serving."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Caller, demo_plugins, make_caller
from pydantic import SecretStr
from quart.typing import TestClientProtocol as Client

from grocerysync.core.errors import ConfigError
from grocerysync.hub.app import create_app
from grocerysync.hub.crypto import SecretBox, SecretsError, blob_key_id
from grocerysync.hub.domain import users
from grocerysync.hub.models import DestinationConfig, Role
from grocerysync.hub.rotation import RotationReport, _rotate_batch, rotate_secrets, secret_models
from grocerysync.hub.settings import Settings

OLD = base64.urlsafe_b64encode(b"o" * 32).decode()
NEW = base64.urlsafe_b64encode(b"n" * 32).decode()
OLD_ID = SecretBox(b"o" * 32).key_id
NEW_ID = SecretBox(b"n" * 32).key_id


def test_key_ring_from_file_and_environment(tmp_path: Path) -> None:
    ring = tmp_path / "keys"
    ring.write_text(f"# primary since the last rotation\n{NEW}\n{OLD}  # retire once rotate-keys is done\n")
    assert Settings(data_dir=tmp_path, secret_key_file=ring).encryption_keys() == [b"n" * 32, b"o" * 32]
    assert Settings(data_dir=tmp_path, secret_key_file=ring).encryption_key() == b"n" * 32
    assert Settings(data_dir=tmp_path, secret_key=f"{NEW}, {OLD}").encryption_keys() == [b"n" * 32, b"o" * 32]
    with pytest.raises(ConfigError, match="key 2 of the key ring"):
        Settings(data_dir=tmp_path, secret_key=f"{NEW},short").encryption_keys()
    ring.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match="holds no secret key"):
        Settings(data_dir=tmp_path, secret_key_file=ring).encryption_keys()


def test_ring_opens_old_blobs_and_seals_new_ones_with_the_primary() -> None:
    old_box = SecretBox(b"o" * 32)
    blob = old_box.encrypt({"password": "pw"}, retailer_id=4)
    ring = SecretBox(b"n" * 32, b"o" * 32)
    assert ring.key_ids == (NEW_ID, OLD_ID)
    assert ring.decrypt(blob, retailer_id=4) == {"password": "pw"}
    assert ring.needs_rotation(blob)
    rotated = ring.reencrypt(blob, retailer_id=4)
    assert blob_key_id(rotated) == NEW_ID
    assert not ring.needs_rotation(rotated)
    assert ring.reencrypt(rotated, retailer_id=4) == rotated
    assert SecretBox(b"n" * 32).decrypt(rotated, retailer_id=4) == {"password": "pw"}
    # Still bound to its tenant after rotation.
    with pytest.raises(SecretsError, match="does not decrypt"):
        ring.decrypt(rotated, retailer_id=5)
    with pytest.raises(SecretsError, match=f"{OLD_ID}, which is not in the hub's key ring"):
        SecretBox(b"n" * 32).decrypt(blob, retailer_id=4)
    assert "o" * 32 not in repr(ring)


async def _store(client: Client, admin: Caller) -> tuple[int, int]:
    r = await (await client.post("/api/retailers", headers=admin.headers, json={"name": "R"})).get_json()
    s = await client.post(f"/api/retailers/{r['id']}/stores", headers=admin.headers, json={"name": "S"})
    return int(r["id"]), int((await s.get_json())["id"])


def _with_ring(settings: Settings, ring: str) -> Settings:
    return settings.model_copy(update={"secret_key": SecretStr(ring)})


async def test_rotation_while_serving(settings: Settings) -> None:
    # Step 1: every hub process learns the new key as a second key, still sealing with the old one.
    async with create_app(_with_ring(settings, f"{OLD},{NEW}"), plugins=demo_plugins()).test_app() as app:
        client = app.test_client()
        admin = await make_caller("admin@example.com", Role.ADMIN)
        _, store = await _store(client, admin)
        ids = []
        for n in range(5):
            body = {"name": f"d{n}", "plugin": "demo-dest", "config": {"host": "h"}, "secrets": {"password": f"pw{n}"}}
            made = await client.post(f"/api/stores/{store}/destinations", headers=admin.headers, json=body)
            ids.append((await made.get_json())["id"])
    before = {d.id: (d.secrets_blob, d.updated_at) for d in await _destinations(settings, ids)}
    assert {blob_key_id(b) for b, _ in before.values()} == {OLD_ID}

    # Step 2: the new key becomes primary. Step 3, while that hub serves: rotate-keys, in small batches.
    async with create_app(_with_ring(settings, f"{NEW},{OLD}"), plugins=demo_plugins()).test_app() as app:
        client = app.test_client()
        assert DestinationConfig in secret_models()
        ring = SecretBox(b"n" * 32, b"o" * 32)
        dry = await rotate_secrets(ring, batch_size=2, dry_run=True)
        assert (dry.rewritten, dry.remaining) == (5, {OLD_ID: 5})
        assert {d.secrets_blob for d in await DestinationConfig.filter(id__in=ids)} == {b for b, _ in before.values()}
        report = await rotate_secrets(ring, batch_size=2)
        assert (report.rewritten, report.current, report.failed) == (5, 0, [])
        after = {d.id: (d.secrets_blob, d.updated_at) for d in await DestinationConfig.filter(id__in=ids)}
        assert {blob_key_id(b) for b, _ in after.values()} == {NEW_ID}
        # Only the secrets changed: not even the rows' update times.
        assert {i: u for i, (_, u) in after.items()} == {i: u for i, (_, u) in before.items()}
        # The serving hub reads and merges the rotated secrets.
        token = await users.create_token("admin@example.com")
        url = f"/api/destinations/{ids[0]}"
        patched = await client.patch(url, headers={"Authorization": f"Bearer {token}"}, json={"secrets": {"k": "v"}})
        assert patched.status_code == 200
        assert (await patched.get_json())["secrets_set"] == ["k", "password"]

    # Step 4: the old key is retired, and every secret still opens.
    new_only = SecretBox(b"n" * 32)
    async with create_app(_with_ring(settings, NEW), plugins=demo_plugins()).test_app():
        for d in await DestinationConfig.filter(id__in=ids):
            assert new_only.decrypt(d.secrets_blob, retailer_id=d.retailer_id)["password"] == f"pw{ids.index(d.id)}"
        again = await rotate_secrets(new_only)
        assert (again.rewritten, again.current) == (0, 5)


async def _destinations(settings: Settings, ids: list[int]) -> list[DestinationConfig]:
    async with create_app(settings, plugins=demo_plugins()).test_app():
        return list(await DestinationConfig.filter(id__in=ids))


async def test_rotation_keeps_a_save_made_meanwhile_and_reports_unknown_keys(settings: Settings) -> None:
    async with create_app(_with_ring(settings, OLD), plugins=demo_plugins()).test_app() as app:
        client = app.test_client()
        admin = await make_caller("admin@example.com", Role.ADMIN)
        retailer, store = await _store(client, admin)
        body = {"name": "d", "plugin": "demo-dest", "config": {"host": "h"}, "secrets": {"password": "pw"}}
        made = await client.post(f"/api/stores/{store}/destinations", headers=admin.headers, json=body)
        dest_id = (await made.get_json())["id"]
        ring = SecretBox(b"n" * 32, b"o" * 32)
        stale = await DestinationConfig.filter(id=dest_id).values("id", "retailer_id", "secrets_blob")
        # A technician saves new secrets (under the new primary key) between the read and the rewrite.
        saved = ring.encrypt({"password": "newer"}, retailer_id=retailer)
        await DestinationConfig.filter(id=dest_id).update(secrets_blob=saved)
        report = RotationReport()
        await _rotate_batch(DestinationConfig, ring, stale, report, False)
        assert (report.rewritten, report.changed_meanwhile) == (0, 1)
        assert (await DestinationConfig.get(id=dest_id)).secrets_blob == saved

        # A key missing from the ring: the row is reported (no secret in the message) and left as it is.
        await DestinationConfig.filter(id=dest_id).update(
            secrets_blob=SecretBox(b"x" * 32).encrypt({"p": "v"}, retailer_id=1)
        )
        failing = await rotate_secrets(ring)
        [line] = failing.failed
        assert line.startswith(f"DestinationConfig {dest_id} (retailer {retailer})")
        assert "not in the hub's key ring" in line
        assert failing.remaining == {SecretBox(b"x" * 32).key_id: 1}


def _cli(settings: Settings, ring: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GROCERYSYNC_DATA_DIR": str(settings.data_dir), "GROCERYSYNC_SECRET_KEY": ring}
    if settings.database_url is not None:
        env["GROCERYSYNC_DATABASE_URL"] = settings.db_url()
    return subprocess.run(
        [sys.executable, "-m", "grocerysync.hub.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


async def test_rotate_keys_command(settings: Settings) -> None:
    async with create_app(_with_ring(settings, OLD), plugins=demo_plugins()).test_app() as app:
        client = app.test_client()
        admin = await make_caller("admin@example.com", Role.ADMIN)
        _, store = await _store(client, admin)
        body = {"name": "d", "plugin": "demo-dest", "config": {"host": "h"}, "secrets": {"password": "canary-rot"}}
        await client.post(f"/api/stores/{store}/destinations", headers=admin.headers, json=body)

    missing = _cli(settings, NEW, "rotate-keys")
    assert missing.returncode == 1
    assert OLD_ID in missing.stderr
    assert "keep the old keys" in missing.stderr
    dry = _cli(settings, f"{NEW},{OLD}", "rotate-keys", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1 stored secrets would be re-encrypted" in dry.stdout
    done = _cli(settings, f"{NEW},{OLD}", "rotate-keys", "--batch-size", "1")
    assert done.returncode == 0, done.stderr
    assert f"re-encrypted 1 stored secrets under key {NEW_ID}" in done.stdout
    assert f"({OLD_ID}) now: remove them from the ring" in done.stdout
    for result in (missing, dry, done):
        assert "canary-rot" not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    assert _cli(settings, NEW, "rotate-keys").returncode == 0
