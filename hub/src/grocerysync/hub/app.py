"""The Quart application factory."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart
from quart_schema import HttpSecurityScheme, Info, QuartSchema, RequestSchemaValidationError
from werkzeug.exceptions import BadRequest, HTTPException

from grocerysync.core.config import field_errors
from grocerysync.core.manager import PluginManager
from grocerysync.hub import __version__, db
from grocerysync.hub.api import connections, retailers
from grocerysync.hub.api.context import EXTENSION, HubState
from grocerysync.hub.crypto import SecretBox, SecretsError
from grocerysync.hub.errors import ApiError
from grocerysync.hub.plugins import plugin_catalogue
from grocerysync.hub.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, plugins: PluginManager | None = None) -> Quart:
    """Build the hub app. ``plugins`` defaults to the installed ``grocerysync`` entry points.

    Raises ConfigError (with what to do) when the secret key is missing or malformed.
    """
    settings = settings or Settings()
    manager = plugins or PluginManager()
    app = Quart("grocerysync.hub")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[EXTENSION] = HubState(settings=settings, plugins=manager, box=SecretBox(settings.encryption_key()))
    QuartSchema(
        app,
        info=Info(title="GrocerySync hub", version=__version__),
        security_schemes={"bearer": HttpSecurityScheme(scheme="bearer")},
        security=[{"bearer": []}],
        redoc_ui_path=None,
        scalar_ui_path=None,
    )

    @app.before_serving
    async def open_database() -> None:
        app.extensions["grocerysync.db"] = await db.connect(settings)

    @app.after_serving
    async def close_database() -> None:
        await db.disconnect(app.extensions.pop("grocerysync.db"))

    _register_errors(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/api/plugins")
    async def list_plugins() -> dict[str, Any]:
        return {"plugins": plugin_catalogue(manager)}

    app.register_blueprint(retailers.bp)
    app.register_blueprint(connections.bp)
    return app


def _body(message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"error": message, "fields": fields or []}


def _register_errors(app: Quart) -> None:
    """Every error answers ``{"error": ..., "fields": [...]}``; none shows a traceback."""

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> tuple[dict[str, Any], int]:
        return exc.to_json(), exc.status

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
