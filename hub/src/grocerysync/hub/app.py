"""The Quart application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from pydantic import ValidationError
from quart import Quart, g, request
from quart_schema import APIKeySecurityScheme, HttpSecurityScheme, Info, QuartSchema, RequestSchemaValidationError
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.routing import IntegerConverter

from grocerysync.core.config import field_errors
from grocerysync.core.manager import PluginManager
from grocerysync.hub import __version__, db, rls
from grocerysync.hub.api import agent_channel, agent_logs, auth, connections, retailers
from grocerysync.hub.api import agents as agents_api
from grocerysync.hub.api import jobs as jobs_api
from grocerysync.hub.api import users as users_api
from grocerysync.hub.api.context import EXTENSION, HubState
from grocerysync.hub.api.cookies import SECURE_COOKIE
from grocerysync.hub.crypto import SecretBox, SecretsError
from grocerysync.hub.domain import heartbeats, leases, retention, scheduler
from grocerysync.hub.domain.wake import WAKEUPS
from grocerysync.hub.errors import ApiError
from grocerysync.hub.plugins import plugin_catalogue
from grocerysync.hub.sessions import Throttled
from grocerysync.hub.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, plugins: PluginManager | None = None) -> Quart:
    """Build the hub app. ``plugins`` defaults to the installed ``grocerysync`` entry points.

    Raises ConfigError (with what to do) when the secret key is missing or malformed.
    """
    settings = settings or Settings()
    manager = plugins or PluginManager()
    app = HubApp("grocerysync.hub")
    # Before any route is added: every <int:...> in a URL is bounded to what the id columns can hold.
    app.url_map.converters["int"] = IdConverter
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[EXTENSION] = HubState(
        settings=settings, plugins=manager, box=SecretBox.from_keys(settings.encryption_keys())
    )
    QuartSchema(
        app,
        info=Info(title="GrocerySync hub", version=__version__),
        security_schemes={
            "bearer": HttpSecurityScheme(scheme="bearer"),
            # Browsers: the session cookie from POST /api/auth/login, plus X-CSRF-Token on unsafe methods.
            "session": APIKeySecurityScheme(in_="cookie", name=SECURE_COOKIE),
        },
        security=[{"bearer": []}, {"session": []}],
        redoc_ui_path=None,
        scalar_ui_path=None,
    )

    @app.before_serving
    async def open_database() -> None:
        app.extensions["grocerysync.db"] = await db.connect(settings)
        if rls.is_postgres(settings.db_url()):
            app.rls_connection = settings.db_url().split(":", 1)[0]
            await rls.log_wall_status(app.rls_connection)

    @app.after_serving
    async def close_database() -> None:
        await db.disconnect(app.extensions.pop("grocerysync.db"))

    @app.while_serving
    async def purge_old_logs() -> AsyncGenerator[None, None]:
        # Runs after the database opened and stops before it closes (while_serving wraps serving).
        task = None
        if settings.purge_interval_seconds > 0:
            task = asyncio.create_task(retention.purge_periodically(settings.purge_interval_seconds))
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @app.while_serving
    async def flush_heartbeats() -> AsyncGenerator[None, None]:
        # Polls record heartbeats in memory; this writes them in batches, and once more on the way out.
        buffer = app.extensions[heartbeats.EXTENSION] = heartbeats.HeartbeatBuffer()
        task = asyncio.create_task(buffer.flush_periodically(settings.heartbeat_flush_seconds))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await heartbeats.flush_quietly(buffer)

    @app.while_serving
    async def wake_across_processes() -> AsyncGenerator[None, None]:
        # PostgreSQL: LISTEN/NOTIFY so a trigger on one hub process wakes a poll held by another (no-op on SQLite).
        await WAKEUPS.start(settings.db_url())
        yield
        await WAKEUPS.stop()

    @app.while_serving
    async def run_schedules() -> AsyncGenerator[None, None]:
        task = None
        if settings.scheduler_interval_seconds > 0:
            grace = settings.lease_grace_seconds
            if grace is None:
                grace = leases.startup_grace(settings.run_ack_seconds, settings.run_lease_seconds)
            sweeper = leases.LeaseSweeper(grace)
            task = asyncio.create_task(
                scheduler.schedule_periodically(settings.scheduler_interval_seconds, sweep=sweeper.sweep)
            )
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    _register_errors(app)

    @app.before_request
    async def require_utf8_json() -> None:
        # Quart decodes JSON bodies as UTF-8 and would fail with a 500 on other bytes: answer what to fix instead.
        if request.is_json:
            raw = await request.get_data(cache=True, as_text=False)
            try:
                if isinstance(raw, bytes):
                    raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(f"the request body is not UTF-8 (at byte {exc.start}): send JSON in UTF-8") from None

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/api/plugins")
    async def list_plugins() -> dict[str, Any]:
        return {"plugins": plugin_catalogue(manager)}

    app.register_blueprint(auth.bp)
    app.register_blueprint(retailers.bp)
    app.register_blueprint(connections.bp)
    app.register_blueprint(jobs_api.bp)
    app.register_blueprint(users_api.bp)
    app.register_blueprint(agents_api.bp)
    app.register_blueprint(agent_channel.bp)
    app.register_blueprint(agent_logs.bp)
    return app


class IdConverter(IntegerConverter):
    """``<int:...>`` in the hub's routes: a number beyond the id columns' range (2**31 - 1 on SQLite and PostgreSQL)
    becomes 0, an id no row has, so it answers 404 like any missing object instead of failing in the driver.

    (Werkzeug's own ``max`` would make such a URL match no rule, which it answers with 405 for some methods.)
    """

    MAX_ID = 2_147_483_647

    def to_python(self, value: str) -> int:
        number = int(super().to_python(value))
        return number if number <= self.MAX_ID else 0


class HubApp(Quart):
    """The hub's Quart app: on PostgreSQL, each authenticated request runs in a transaction narrowed by RLS."""

    #: The tortoise connection name of a PostgreSQL database (None on SQLite, which has no row-level security).
    rls_connection: str | None = None

    async def dispatch_request(self, request_context: Any = None) -> Any:
        """Run the view, inside :func:`grocerysync.hub.rls.tenant_transaction` when a principal is known.

        ``before_request`` (authentication) has run by now, so ``g.scope`` names the caller. Requests without
        one (health, sign-in, agents' long polls) do not hold a transaction.
        """
        scope = g.get("scope")
        if self.rls_connection is None or scope is None:
            return await super().dispatch_request(request_context)
        async with rls.tenant_transaction(scope.principal, self.rls_connection):
            return await super().dispatch_request(request_context)


def _body(message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"error": message, "fields": fields or []}


def _register_errors(app: Quart) -> None:
    """Every error answers ``{"error": ..., "fields": [...]}``; none shows a traceback."""

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> tuple[dict[str, Any], int]:
        return exc.to_json(), exc.status

    @app.errorhandler(Throttled)
    async def throttled(exc: Throttled) -> tuple[dict[str, Any], int, dict[str, str]]:
        return exc.to_json(), exc.status, {"Retry-After": str(exc.retry_after)}

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_request(exc: RequestSchemaValidationError) -> tuple[dict[str, Any], int]:
        err = exc.validation_error
        if isinstance(err, ValidationError):
            fields = field_errors(err)
            detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
            return _body(f"invalid request: {detail}", fields), 422
        return _body("the request body must be a JSON object matching the documented schema (see /docs)"), 400

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[dict[str, Any], int]:
        status = exc.code or 500
        if status == 413:
            return _body(f"the request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"), 413
        if status == 400 and exc.description == BadRequest.description:
            return _body(
                "the request is malformed: the body must be valid JSON with Content-Type application/json"
            ), 400
        return _body(exc.description or exc.name), status

    @app.errorhandler(SecretsError)
    async def secrets_error(exc: SecretsError) -> tuple[dict[str, Any], int]:
        log.error("secrets: %s", exc)
        return _body(str(exc)), 500

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> tuple[dict[str, Any], int]:
        log.exception("unexpected error")
        return _body("internal error; the hub's log has the details"), 500
