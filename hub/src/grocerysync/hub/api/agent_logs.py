"""``POST /agent/v1/logs``: an agent ships a batch of its log records (see :mod:`grocerysync.hub.domain.log_ingest`).

The body is read straight into :class:`~grocerysync.core.wire.LogBatch` from its bytes (no intermediate dicts:
this is the hub's busiest route). Its size is bounded by ``GROCERYSYNC_MAX_BODY_BYTES`` (1,000,000 bytes by
default; 413 beyond), and a batch holds at most ``wire.MAX_BATCH`` records: agents split what they ship to fit both.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request
from quart_schema import document_request, document_response

from grocerysync.core.wire import AGENT_API_PREFIX, LogBatch, Receipt
from grocerysync.hub.api.agent_auth import require_agent
from grocerysync.hub.domain import log_ingest

bp = Blueprint("agent_logs", __name__, url_prefix=AGENT_API_PREFIX)


@bp.post("/logs")
@document_request(LogBatch)
@document_response(Receipt)
async def ship_logs() -> dict[str, Any]:
    """Store a batch of this agent's log records, each once (by its ``uid``); answer how many were new.

    Records are filed under the agent's own store; a ``run_id`` of another store is kept in the record's fields,
    not linked. 401 for an unknown or revoked credential, 413 for a body over the hub's limit, 422 for a body
    that is not a log batch (a single unreadable record is stored as a warning instead, not refused).
    """
    agent = await require_agent()
    raw = await request.get_data(as_text=False)
    batch = log_ingest.parse_batch(raw if isinstance(raw, bytes) else raw.encode())
    receipt = await log_ingest.ingest(agent, batch)
    return receipt.model_dump()
