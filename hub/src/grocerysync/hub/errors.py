"""The one error type the hub answers with; the app maps it to ``{"error": ..., "fields": [...]}``."""

from __future__ import annotations

from grocerysync.core.errors import GrocerySyncError


class ApiError(GrocerySyncError):
    """An error meant for the API client: an HTTP status, a message, and field-level details."""

    status = 400

    def __init__(self, message: str, fields: list[dict[str, str]] | None = None, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or []
        if status is not None:
            self.status = status

    def to_json(self) -> dict[str, object]:
        """The response body."""
        return {"error": self.message, "fields": self.fields}


class Unauthorized(ApiError):
    """No credentials, or credentials the hub does not accept."""

    status = 401


class Forbidden(ApiError):
    """The principal may see the object but not do this to it (a viewer writing, a technician managing users)."""

    status = 403


class NotFound(ApiError):
    """No such object, or one of another tenant's (which must look exactly the same)."""

    status = 404


class Conflict(ApiError):
    """The change clashes with existing data (a duplicate name, an object still in use)."""

    status = 409


class Invalid(ApiError):
    """The request is well-formed but a field is wrong; ``fields`` names each one."""

    status = 422
