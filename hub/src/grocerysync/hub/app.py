"""The Quart application factory."""

from __future__ import annotations

from typing import Any

from quart import Quart

from grocerysync.core.manager import PluginManager
from grocerysync.hub.plugins import plugin_catalogue
from grocerysync.hub.settings import Settings


def create_app(settings: Settings | None = None, *, plugins: PluginManager | None = None) -> Quart:
    """Build the hub app. ``plugins`` defaults to the installed ``grocerysync`` entry points."""
    app = Quart("grocerysync.hub")
    app.config["GROCERYSYNC_SETTINGS"] = settings or Settings()
    manager = plugins or PluginManager()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/api/plugins")
    async def list_plugins() -> dict[str, Any]:
        return {"plugins": plugin_catalogue(manager)}

    return app
