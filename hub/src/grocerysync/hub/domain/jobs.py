"""Export jobs: a store's POS connection to one of its destinations, on a schedule, and the job spec agents run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import BaseModel, SecretStr

from grocerysync.core.config import parse_config
from grocerysync.core.errors import ConfigError, PluginError
from grocerysync.core.jobs import DestinationSpec, Filter, JobOptions, JobSpec, Mapping, SourceSpec, TransformSpec
from grocerysync.core.manager import PluginManager
from grocerysync.hub.crypto import SecretBox
from grocerysync.hub.domain.common import audit, paginate, snapshot
from grocerysync.hub.errors import Conflict, Invalid, NotFound
from grocerysync.hub.models import DestinationConfig, ExportJob, PosConnection, Run, RunStatus, Store
from grocerysync.hub.schemas_jobs import MANUAL, JobFilter, JobIn, JobOut, JobPage, JobPatch, RunOut
from grocerysync.hub.scope import Scope

#: What a preview shows in place of each secret that is set.
MASK = "**********"


def next_run(schedule: str, time_zone: str, after: datetime | None = None) -> datetime | None:
    """When a cron ``schedule`` fires next after ``after`` (default: now), read in the store's ``time_zone``.

    Returns a UTC time, or None for manual jobs. "0 6 * * *" in America/Chicago is 6:00 Chicago time, which
    is 12:00 UTC in winter and 11:00 UTC in summer.
    """
    if not schedule or schedule == MANUAL:
        return None
    start = (after or datetime.now(UTC)).astimezone(ZoneInfo(time_zone))
    fired: datetime = croniter(schedule, start).get_next(datetime)
    return fired.astimezone(UTC)


def _stored_schedule(schedule: str) -> str:
    return "" if schedule == MANUAL else schedule


def _refresh_next_run(job: ExportJob, store: Store) -> None:
    job.next_run_at = next_run(job.schedule, store.time_zone) if job.enabled else None


async def reschedule_store_jobs(scope: Scope, store: Store) -> None:
    """Recompute when each enabled job of ``store`` fires next (after its time zone changed)."""
    for job in await scope.query(ExportJob).filter(store_id=store.id, enabled=True):
        _refresh_next_run(job, store)
        await job.save(update_fields=["next_run_at"])


async def _endpoint(scope: Scope, model: type[Any], object_id: int, store: Store, field: str, what: str) -> Any:
    """The job's source or destination: it must belong to the job's store (else 422 naming the field)."""
    try:
        obj = await scope.get(model, object_id)
    except NotFound:
        obj = None
    if obj is None or obj.store_id != store.id:
        # The same answer whether it does not exist, belongs to another store, or to another tenant.
        message = f"store {store.id} has no {what} {object_id}; pick one of this store's {what}s"
        raise Invalid(message, [{"field": field, "message": message}])
    return obj


def _check_transforms(plugins: PluginManager, transforms: list[TransformSpec]) -> None:
    for number, spec in enumerate(transforms):
        where = f"transforms.{number}"
        try:
            model: type[BaseModel] = plugins.transform(spec.plugin).config_model
        except PluginError as exc:
            raise Invalid(
                str(exc), [{"field": f"{where}.plugin", "message": f"no transform named {spec.plugin!r} is installed"}]
            ) from None
        try:
            parse_config(model, spec.config, where=f"{where}.config")
        except ConfigError as exc:
            raise Invalid(f"{spec.plugin}: {exc}", exc.errors) from None


def _dump(value: BaseModel) -> dict[str, Any]:
    return value.model_dump(mode="json")


async def list_jobs(scope: Scope, args: JobFilter) -> JobPage:
    """The export jobs the principal may see."""
    qs = scope.query(ExportJob)
    if args.retailer_id is not None:
        qs = qs.filter(retailer_id=args.retailer_id)
    if args.store_id is not None:
        qs = qs.filter(store_id=args.store_id)
    if args.enabled is not None:
        qs = qs.filter(enabled=args.enabled)
    return await paginate(qs, args, JobPage)


async def get_job(scope: Scope, job_id: int) -> JobOut:
    """One export job."""
    return JobOut.model_validate(await scope.get(ExportJob, job_id))


async def create_job(scope: Scope, plugins: PluginManager, store_id: int, data: JobIn) -> JobOut:
    """A new export job of a store; its source and destination must be the store's own."""
    store = await scope.get(Store, store_id)
    scope.require_write()
    source = await _endpoint(scope, PosConnection, data.source_id, store, "source_id", "POS connection")
    destination = await _endpoint(scope, DestinationConfig, data.destination_id, store, "destination_id", "destination")
    _check_transforms(plugins, data.transforms)
    job = ExportJob(
        retailer_id=store.retailer_id,
        store_id=store.id,
        name=data.name,
        source_id=source.id,
        destination_id=destination.id,
        mapping=_dump(data.mapping),
        filters=[_dump(f) for f in data.filters],
        transforms=[_dump(t) for t in data.transforms],
        options=_dump(data.options),
        schedule=_stored_schedule(data.schedule),
        enabled=data.enabled,
        max_retries=data.max_retries,
        retry_delay_seconds=data.retry_delay_seconds,
    )
    _refresh_next_run(job, store)
    await job.save()
    await audit(scope, "create", job, retailer_id=job.retailer_id, after=snapshot(JobOut, job))
    return JobOut.model_validate(job)


async def update_job(scope: Scope, plugins: PluginManager, job_id: int, data: JobPatch) -> JobOut:
    """Change an export job; the schedule's next time is worked out again."""
    job = await scope.get(ExportJob, job_id)
    scope.require_write()
    store = await scope.get(Store, job.store_id)
    before = snapshot(JobOut, job)
    given = data.model_fields_set
    if data.source_id is not None:
        job.source_id = (await _endpoint(scope, PosConnection, data.source_id, store, "source_id", "POS connection")).id
    if data.destination_id is not None:
        dest = await _endpoint(scope, DestinationConfig, data.destination_id, store, "destination_id", "destination")
        job.destination_id = dest.id
    if data.transforms is not None:
        _check_transforms(plugins, data.transforms)
        job.transforms = [_dump(t) for t in data.transforms]
    if data.mapping is not None:
        job.mapping = _dump(data.mapping)
    if data.filters is not None:
        job.filters = [_dump(f) for f in data.filters]
    if data.options is not None:
        job.options = _dump(data.options)
    if data.schedule is not None:
        job.schedule = _stored_schedule(data.schedule)
    for name in ("name", "enabled", "max_retries", "retry_delay_seconds"):
        if name in given and getattr(data, name) is not None:
            setattr(job, name, getattr(data, name))
    _refresh_next_run(job, store)
    await job.save()
    await audit(scope, "update", job, retailer_id=job.retailer_id, before=before, after=snapshot(JobOut, job))
    return JobOut.model_validate(job)


async def set_enabled(scope: Scope, job_id: int, enabled: bool) -> JobOut:
    """Enable or disable a job's schedule (a disabled job is neither scheduled nor triggered)."""
    job = await scope.get(ExportJob, job_id)
    scope.require_write()
    if job.enabled == enabled:
        return JobOut.model_validate(job)
    store = await scope.get(Store, job.store_id)
    before = snapshot(JobOut, job)
    job.enabled = enabled
    _refresh_next_run(job, store)
    await job.save()
    action = "enable" if enabled else "disable"
    await audit(scope, action, job, retailer_id=job.retailer_id, before=before, after=snapshot(JobOut, job))
    return JobOut.model_validate(job)


async def delete_job(scope: Scope, job_id: int) -> None:
    """Delete an export job; its runs stay in the history, without the link."""
    job = await scope.get(ExportJob, job_id)
    scope.require_write()
    before = snapshot(JobOut, job)
    await job.delete()
    await audit(scope, "delete", job, retailer_id=job.retailer_id, before=before)


async def trigger_job(scope: Scope, job_id: int, *, full: bool = False) -> RunOut:
    """Queue a run of the job now (the store's agent picks it up). 409 if disabled or already queued/running.

    ``full`` re-sends every item instead of only what changed. The caller wakes the store's agents
    (``WAKEUPS.notify_store``) once the run is committed.
    """
    job = await scope.get(ExportJob, job_id)
    scope.require_write()
    if not job.enabled:
        raise Conflict(f"export job {job.id} ({job.name}) is disabled; enable it before running it")
    pending = (
        await scope.query(Run)
        .filter(job_id=job.id, status__in=[RunStatus.QUEUED, RunStatus.DISPATCHED, RunStatus.RUNNING])
        .order_by("id")
        .first()
    )
    if pending is not None:
        raise Conflict(
            f"export job {job.id} ({job.name}) already has run {pending.id} {pending.status}; "
            "wait for it to finish before starting another"
        )
    run = await Run.create(
        retailer_id=job.retailer_id,
        store_id=job.store_id,
        job_id=job.id,
        job_name=job.name,
        trigger="manual",
        triggered_by=scope.principal.email,
        full=full,
    )
    await audit(scope, "trigger", job, retailer_id=job.retailer_id, after={"run_id": run.id, "full": full})
    return RunOut.model_validate(run)


async def _spec(scope: Scope, job_id: int, secrets: Any) -> JobSpec:
    job = await scope.get(ExportJob, job_id)
    source = await scope.get(PosConnection, job.source_id)
    destination = await scope.get(DestinationConfig, job.destination_id)
    return JobSpec(
        name=job.name,
        source=SourceSpec(plugin=source.plugin, config=source.config),
        destination=DestinationSpec(
            plugin=destination.plugin, config=destination.config, secrets=await secrets(destination)
        ),
        mapping=Mapping.model_validate(job.mapping),
        filters=[Filter.model_validate(f) for f in job.filters],
        transforms=[TransformSpec.model_validate(t) for t in job.transforms],
        options=JobOptions.model_validate(job.options),
    )


async def job_spec(scope: Scope, box: SecretBox, job_id: int) -> JobSpec:
    """The exact job spec the store's agent runs, with the destination's secrets decrypted.

    The one place a job's secrets are decrypted to be sent. They stay ``SecretStr``: printing or dumping the spec
    masks them, and only ``spec.model_dump(mode="json", context={"reveal_secrets": True})`` (building the
    agent's assignment) writes them out.
    """

    async def decrypt(destination: DestinationConfig) -> dict[str, SecretStr]:
        plain = box.decrypt(destination.secrets_blob, retailer_id=destination.retailer_id)
        return {k: SecretStr(v) for k, v in plain.items()}

    return await _spec(scope, job_id, decrypt)


async def preview_spec(scope: Scope, job_id: int) -> dict[str, Any]:
    """The job spec as the agent will get it, for people: each secret that is set shows as a mask, undecrypted."""

    async def masked(destination: DestinationConfig) -> dict[str, SecretStr]:
        return {name: SecretStr(MASK) for name in destination.secret_fields}

    spec = await _spec(scope, job_id, masked)
    return spec.model_dump(mode="json")
