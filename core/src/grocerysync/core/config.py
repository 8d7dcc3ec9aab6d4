"""Validating plugin configuration with errors that name the field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from grocerysync.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """``[{"field": "config.port", "message": "..."}]`` from a pydantic error, never echoing input values."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"])
        field = ".".join(p for p in (prefix, path) if p) or prefix or "(root)"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append({"field": field, "message": msg})
    return out


def parse_config(model: type[M], data: Any, *, where: str) -> M:
    """Validate ``data`` against ``model``; raise ConfigError naming ``where`` and each bad field."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        errors = field_errors(exc, where)
        # The message names fields relative to ``where`` ("invalid source.config: path: ..."); the
        # structured errors carry the full path for forms.
        detail = "; ".join(f"{e['field'].removeprefix(where + '.')}: {e['message']}" for e in errors)
        raise ConfigError(f"invalid {where}: {detail}", errors) from None
