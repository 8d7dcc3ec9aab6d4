"""Export jobs: validation with the job spec's models, schedules in the store's time zone, triggers, the job spec."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import Caller
from quart.typing import TestClientProtocol as Client

from grocerysync.core.jobs import JobSpec
from grocerysync.hub.crypto import SecretBox
from grocerysync.hub.domain.jobs import job_spec, next_run
from grocerysync.hub.models import AuditEntry, Role
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.settings import Settings

CANARY = "canary-job-5e0c71aa-do-not-leak"


async def _store(client: Client, admin: Caller, name: str = "R", tz: str = "America/Chicago") -> dict[str, int]:
    h = admin.headers
    r = await (await client.post("/api/retailers", headers=h, json={"name": name})).get_json()
    s = await (
        await client.post(f"/api/retailers/{r['id']}/stores", headers=h, json={"name": "S", "time_zone": tz})
    ).get_json()
    c = await client.post(
        f"/api/stores/{s['id']}/connections",
        headers=h,
        json={"name": "pos", "plugin": "demo-pos", "config": {"path": "p"}},
    )
    d = await client.post(
        f"/api/stores/{s['id']}/destinations",
        headers=h,
        json={"name": "d", "plugin": "demo-dest", "config": {"host": "h"}, "secrets": {"password": CANARY}},
    )
    return {
        "retailer": r["id"],
        "store": s["id"],
        "source": (await c.get_json())["id"],
        "dest": (await d.get_json())["id"],
    }


def _job(ids: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"name": "nightly", "source_id": ids["source"], "destination_id": ids["dest"], **extra}


async def test_create_edit_and_read_a_job(client: Client, admin: Caller) -> None:
    ids = await _store(client, admin)
    body = _job(
        ids,
        mapping={"defaults": {"department": "Grocery"}},
        filters=[{"field": "price", "op": "gt", "value": 0}],
        options={"batch_size": 200, "mode": "full"},
        schedule="0 6 * * *",
        max_retries=2,
    )
    created = await client.post(f"/api/stores/{ids['store']}/jobs", headers=admin.headers, json=body)
    assert created.status_code == 201, await created.get_json()
    job = await created.get_json()
    assert job["options"]["batch_size"] == 200
    assert job["options"]["max_attempts"] == 5  # the spec's defaults are stored explicitly
    assert job["filters"] == [{"field": "price", "op": "gt", "value": 0}]
    assert job["schedule"] == "0 6 * * *"
    # 6:00 in Chicago is 11:00 or 12:00 UTC, depending on daylight saving time.
    next_at = datetime.fromisoformat(job["next_run_at"])
    assert next_at.astimezone(UTC).hour in (11, 12)
    assert next_at.minute == 0

    url = f"/api/jobs/{job['id']}"
    patched = await (
        await client.patch(url, headers=admin.headers, json={"schedule": "manual", "name": "n2"})
    ).get_json()
    assert (patched["schedule"], patched["next_run_at"], patched["name"]) == ("manual", None, "n2")
    assert patched["options"]["batch_size"] == 200  # untouched fields stay

    disabled = await (await client.post(f"{url}/disable", headers=admin.headers)).get_json()
    assert disabled["enabled"] is False
    listed = await (
        await client.get(f"/api/jobs?store_id={ids['store']}&enabled=false", headers=admin.headers)
    ).get_json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    assert (await (await client.get("/api/jobs?enabled=true", headers=admin.headers)).get_json())["total"] == 0

    actions = [a.action for a in await Scope(SYSTEM).query(AuditEntry).filter(object_type="ExportJob").order_by("id")]
    assert actions == ["create", "update", "disable"]
    assert (await client.delete(url, headers=admin.headers)).status_code == 204
    assert (await client.get(url, headers=admin.headers)).status_code == 404


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ({"schedule": "every day"}, "schedule", "five cron fields"),
        ({"schedule": "0 6 * * * *"}, "schedule", "five cron fields"),
        ({"schedule": "61 6 * * *"}, "schedule", "not a schedule"),
        ({"schedule": "0 6 30 2 *"}, "schedule", "never fires"),
        ({"filters": [{"field": "colour", "op": "eq", "value": "x"}]}, "filters.0.field", "not an item field"),
        ({"filters": [{"field": "price", "op": "gt", "value": "cheap"}]}, "filters.0", "needs a number"),
        ({"mapping": {"overrides": {"item_id": "x"}}}, "mapping.overrides", "cannot be mapped"),
        ({"options": {"batch_size": 0}}, "options.batch_size", "greater than or equal"),
        ({"options": {"mode": "sometimes"}}, "options.mode", "'delta' or 'full'"),
        ({"transforms": [{"plugin": "nope"}]}, "transforms.0.plugin", "no transform named 'nope'"),
        ({"max_retries": 11}, "max_retries", "less than or equal"),
        ({"source_id": "x"}, "source_id", "integer"),
        ({"source_id": 99999}, "source_id", "has no POS connection 99999"),
        ({"destination_id": 2**40}, "destination_id", "less than or equal"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
async def test_bad_jobs_answer_422_naming_the_field(
    client: Client, admin: Caller, extra: dict[str, Any], field: str, says: str
) -> None:
    ids = await _store(client, admin)
    response = await client.post(f"/api/stores/{ids['store']}/jobs", headers=admin.headers, json=_job(ids, **extra))
    answer = await response.get_json()
    assert response.status_code == 422, answer
    matching = [e for e in answer["fields"] if e["field"] == field]
    assert matching, answer
    assert says in matching[0]["message"]


async def test_source_and_destination_must_be_the_stores_own(client: Client, admin: Caller) -> None:
    mine = await _store(client, admin, "Mine")
    other = await _store(client, admin, "Other")
    for field, key in (("source_id", "source"), ("destination_id", "dest")):
        body = _job(mine, **{field: other[key]})
        response = await client.post(f"/api/stores/{mine['store']}/jobs", headers=admin.headers, json=body)
        assert response.status_code == 422
        assert (await response.get_json())["fields"][0]["field"] == field
    created = await (
        await client.post(f"/api/stores/{mine['store']}/jobs", headers=admin.headers, json=_job(mine))
    ).get_json()
    patched = await client.patch(
        f"/api/jobs/{created['id']}", headers=admin.headers, json={"source_id": other["source"]}
    )
    assert patched.status_code == 422


async def test_trigger_queues_one_run(client: Client, admin: Caller) -> None:
    ids = await _store(client, admin)
    job = await (
        await client.post(f"/api/stores/{ids['store']}/jobs", headers=admin.headers, json=_job(ids))
    ).get_json()
    triggered = await client.post(f"/api/jobs/{job['id']}/trigger", headers=admin.headers)
    assert triggered.status_code == 202
    run = await triggered.get_json()
    assert (run["status"], run["job_id"], run["trigger"], run["triggered_by"]) == (
        "queued",
        job["id"],
        "manual",
        admin.email,
    )
    again = await client.post(f"/api/jobs/{job['id']}/trigger", headers=admin.headers)
    assert again.status_code == 409
    assert f"run {run['id']} queued" in (await again.get_json())["error"]
    await client.post(f"/api/jobs/{job['id']}/disable", headers=admin.headers)
    assert (await client.post(f"/api/jobs/{job['id']}/trigger", headers=admin.headers)).status_code == 409
    # Deleting the job keeps its run, unlinked.
    await client.delete(f"/api/jobs/{job['id']}", headers=admin.headers)
    kept = await (await client.get(f"/api/runs/{run['id']}", headers=admin.headers)).get_json()
    assert (kept["job_id"], kept["job_name"]) == (None, "nightly")


async def test_job_spec_validates_and_reveals_secrets_only_when_asked(
    client: Client, admin: Caller, settings: Settings
) -> None:
    ids = await _store(client, admin)
    body = _job(ids, mapping={"value_maps": {"department": {"1": "Produce"}}}, options={"dry_run": True})
    job = await (await client.post(f"/api/stores/{ids['store']}/jobs", headers=admin.headers, json=body)).get_json()

    spec = await job_spec(Scope(SYSTEM), SecretBox(settings.encryption_key()), job["id"])
    assert CANARY not in repr(spec)
    assert CANARY not in spec.model_dump_json()
    revealed = spec.model_dump(mode="json", context={"reveal_secrets": True})
    assert revealed["destination"]["secrets"] == {"password": CANARY}
    again = JobSpec.model_validate(revealed)
    assert again.destination.secret_values() == {"password": CANARY}
    assert (again.source.plugin, again.source.config) == ("demo-pos", {"path": "p"})
    assert again.mapping.value_maps == {"department": {"1": "Produce"}}
    assert again.options.dry_run is True

    # People see the same spec with the secret masked, and never decrypted.
    preview = await client.get(f"/api/jobs/{job['id']}/spec", headers=admin.headers)
    text = await preview.get_data(as_text=True)
    assert CANARY not in text
    shown = await preview.get_json()
    assert shown["destination"]["secrets"] == {"password": "**********"}
    assert JobSpec.model_validate(shown).name == "nightly"


async def test_viewers_read_jobs_but_cannot_change_or_run_them(client: Client, admin: Caller) -> None:
    from conftest import make_caller

    ids = await _store(client, admin)
    job = await (
        await client.post(f"/api/stores/{ids['store']}/jobs", headers=admin.headers, json=_job(ids))
    ).get_json()
    viewer = await make_caller("v@example.com", Role.VIEWER, retailers=[ids["retailer"]])
    assert (await client.get(f"/api/jobs/{job['id']}", headers=viewer.headers)).status_code == 200
    for url in (f"/api/jobs/{job['id']}/trigger", f"/api/jobs/{job['id']}/disable"):
        assert (await client.post(url, headers=viewer.headers)).status_code == 403
    assert (await (await client.get("/api/runs", headers=admin.headers)).get_json())["total"] == 0


def test_next_run_follows_the_store_time_zone() -> None:
    winter = datetime(2024, 1, 15, 0, 0, tzinfo=UTC)
    summer = datetime(2024, 7, 15, 0, 0, tzinfo=UTC)
    assert next_run("0 6 * * *", "America/Chicago", winter) == datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    assert next_run("0 6 * * *", "America/Chicago", summer) == datetime(2024, 7, 15, 11, 0, tzinfo=UTC)
    assert next_run("30 2 * * *", "UTC", winter) == datetime(2024, 1, 15, 2, 30, tzinfo=UTC)
    assert next_run("manual", "UTC", winter) is None


async def test_changing_the_store_time_zone_moves_the_next_run(client: Client, admin: Caller) -> None:
    ids = await _store(client, admin, tz="America/Chicago")
    created = await client.post(
        f"/api/stores/{ids['store']}/jobs", headers=admin.headers, json=_job(ids, schedule="0 6 * * *")
    )
    job = await created.get_json()
    assert datetime.fromisoformat(job["next_run_at"]).astimezone(UTC).hour in (11, 12)
    moved = await client.patch(f"/api/stores/{ids['store']}", headers=admin.headers, json={"time_zone": "Asia/Tokyo"})
    assert moved.status_code == 200, await moved.get_json()
    after = await (await client.get(f"/api/jobs/{job['id']}", headers=admin.headers)).get_json()
    # 6:00 in Tokyo (no daylight saving time) is 21:00 UTC the day before.
    assert datetime.fromisoformat(after["next_run_at"]).astimezone(UTC).hour == 21
