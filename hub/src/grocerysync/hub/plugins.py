"""What the hub knows of the installed plugins: names, distributions and their config forms."""

from __future__ import annotations

from typing import Any

from grocerysync.core.manager import PluginManager


def plugin_catalogue(manager: PluginManager) -> list[dict[str, Any]]:
    """Every POS connector and destination with the JSON Schemas its configuration forms are built from."""
    out: list[dict[str, Any]] = []
    for name, connector in sorted(manager.pos_connectors().items()):
        out.append(
            {
                "kind": "pos",
                "name": name,
                "distribution": connector.plugin,
                "description": connector.description,
                "config_schema": connector.config_model.model_json_schema(),
            }
        )
    for name, destination in sorted(manager.destinations().items()):
        out.append(
            {
                "kind": "destination",
                "name": name,
                "distribution": destination.plugin,
                "description": destination.description,
                "config_schema": destination.config_model.model_json_schema(),
                "secrets_schema": destination.secrets_model.model_json_schema(),
            }
        )
    return out
