"""Routes for export jobs, their runs and rejections, and log entries."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from quart import Blueprint, after_this_request, request
from quart.typing import ResponseTypes
from quart_schema import validate_querystring, validate_request, validate_response

from grocerysync.core.config import field_errors
from grocerysync.hub.api.context import authenticate, hub, scope
from grocerysync.hub.domain import commands, runs
from grocerysync.hub.domain import jobs as domain
from grocerysync.hub.domain.wake import WAKEUPS
from grocerysync.hub.errors import ApiError, Invalid
from grocerysync.hub.schemas import PageArgs
from grocerysync.hub.schemas_jobs import (
    JobFilter,
    JobIn,
    JobOut,
    JobPage,
    JobPatch,
    LogFilter,
    LogPage,
    RejectionPage,
    RunFilter,
    RunOut,
    RunPage,
    TriggerArgs,
    TriggerIn,
)

bp = Blueprint("jobs", __name__, url_prefix="/api")
bp.before_request(authenticate)


@bp.get("/jobs")
@validate_querystring(JobFilter)
@validate_response(JobPage)
async def list_jobs(query_args: JobFilter) -> JobPage:
    """The export jobs you may see; narrow with ``retailer_id``, ``store_id``, ``enabled``."""
    return await domain.list_jobs(scope(), query_args)


@bp.post("/stores/<int:store_id>/jobs")
@validate_request(JobIn)
@validate_response(JobOut, 201)
async def create_job(store_id: int, data: JobIn) -> tuple[JobOut, int]:
    """Add an export job to a store: one of its POS connections to one of its destinations."""
    return await domain.create_job(scope(), hub().plugins, store_id, data), 201


@bp.get("/jobs/<int:job_id>")
@validate_response(JobOut)
async def get_job(job_id: int) -> JobOut:
    """One export job."""
    return await domain.get_job(scope(), job_id)


@bp.patch("/jobs/<int:job_id>")
@validate_request(JobPatch)
@validate_response(JobOut)
async def update_job(job_id: int, data: JobPatch) -> JobOut:
    """Change an export job."""
    return await domain.update_job(scope(), hub().plugins, job_id, data)


@bp.delete("/jobs/<int:job_id>")
async def delete_job(job_id: int) -> tuple[str, int]:
    """Delete an export job (its runs stay in the history)."""
    await domain.delete_job(scope(), job_id)
    return "", 204


@bp.post("/jobs/<int:job_id>/enable")
@validate_response(JobOut)
async def enable_job(job_id: int) -> JobOut:
    """Run the job on its schedule again, and allow manual runs."""
    return await domain.set_enabled(scope(), job_id, True)


@bp.post("/jobs/<int:job_id>/disable")
@validate_response(JobOut)
async def disable_job(job_id: int) -> JobOut:
    """Stop the job's schedule and manual runs (runs already queued still go)."""
    return await domain.set_enabled(scope(), job_id, False)


def wake_after_commit(*, store_id: int | None = None, agent_id: int | None = None) -> None:
    """Wake agents' polls once the request's transaction is committed (before it, they would find nothing)."""

    @after_this_request
    async def wake(response: ResponseTypes) -> ResponseTypes:
        if response.status_code < 300:
            if store_id is not None:
                await WAKEUPS.notify_store(store_id)
            if agent_id is not None:
                await WAKEUPS.notify_agent(agent_id)
        return response


@bp.post("/jobs/<int:job_id>/trigger")
@validate_querystring(TriggerArgs)
@validate_response(RunOut, 202)
async def trigger_job(job_id: int, query_args: TriggerArgs) -> tuple[RunOut, int]:
    """Queue a run of the job now; the store's agent picks it up at once if it is polling.

    ``full`` (in the query, or an optional JSON body ``{"full": true}``) re-sends every item, not only changes.
    """
    full = query_args.full
    raw = await request.get_data(cache=True, as_text=False)
    # No body, or JSON null (what some clients send for "nothing"): the query alone decides.
    if raw.strip() not in (b"", b"null"):
        body = await request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError('the body of a trigger is optional; when given it must be a JSON object like {"full": true}')
        try:
            full = full or TriggerIn.model_validate(body).full
        except ValidationError as exc:
            fields = field_errors(exc)
            detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
            raise Invalid(f"invalid request: {detail}", fields) from None
    run = await domain.trigger_job(scope(), job_id, full=full)
    wake_after_commit(store_id=run.store_id)
    return run, 202


@bp.get("/jobs/<int:job_id>/spec")
async def job_spec(job_id: int) -> dict[str, Any]:
    """The job spec the store's agent will run, with each secret that is set shown as a mask."""
    return await domain.preview_spec(scope(), job_id)


@bp.get("/runs")
@validate_querystring(RunFilter)
@validate_response(RunPage)
async def list_runs(query_args: RunFilter) -> RunPage:
    """Runs you may see, newest first; filter by retailer, store, job, status and queue time."""
    return await runs.list_runs(scope(), query_args)


@bp.get("/runs/<int:run_id>")
@validate_response(RunOut)
async def get_run(run_id: int) -> RunOut:
    """One run with its counts."""
    return await runs.get_run(scope(), run_id)


@bp.post("/runs/<int:run_id>/cancel")
@validate_response(RunOut)
async def cancel_run(run_id: int) -> RunOut:
    """Cancel a run: a queued one at once; a dispatched or running one stops after its agent's current batch
    (it shows ``cancel_requested_at`` until the agent reports it ``cancelled``). 409 once it finished."""
    cancelled = await commands.cancel_run(scope(), run_id)
    if cancelled.agent_id is not None:
        wake_after_commit(agent_id=cancelled.agent_id)
    return cancelled.run


@bp.get("/runs/<int:run_id>/rejections")
@validate_querystring(PageArgs)
@validate_response(RejectionPage)
async def list_rejections(run_id: int, query_args: PageArgs) -> RejectionPage:
    """The items a run could not send, and why."""
    return await runs.list_rejections(scope(), run_id, query_args)


@bp.get("/logs")
@validate_querystring(LogFilter)
@validate_response(LogPage)
async def list_logs(query_args: LogFilter) -> LogPage:
    """Log entries you may see, newest first; filter by retailer, store, agent, run, level, time and text."""
    return await runs.list_logs(scope(), query_args)
