"""Routes for users (admins manage them, everyone sees themselves), your own API tokens, and the audit log."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from grocerysync.hub.api.context import authenticate, scope
from grocerysync.hub.domain import accounts
from grocerysync.hub.domain.audit import list_audit
from grocerysync.hub.schemas import PageArgs
from grocerysync.hub.schemas_admin import (
    AuditFilter,
    AuditPage,
    TokenCreated,
    TokenIn,
    TokenPage,
    UserFilter,
    UserIn,
    UserOut,
    UserPage,
    UserPatch,
)

bp = Blueprint("users", __name__, url_prefix="/api")
bp.before_request(authenticate)


@bp.get("/users")
@validate_querystring(UserFilter)
@validate_response(UserPage)
async def list_users(query_args: UserFilter) -> UserPage:
    """Every user (admins), or just yourself."""
    return await accounts.list_users(scope(), query_args)


@bp.post("/users")
@validate_request(UserIn)
@validate_response(UserOut, 201)
async def create_user(data: UserIn) -> tuple[UserOut, int]:
    """Add a user with a role and retailer assignments (admins only)."""
    return await accounts.create_user(scope(), data), 201


@bp.get("/users/<int:user_id>")
@validate_response(UserOut)
async def get_user(user_id: int) -> UserOut:
    """One user (admins: anyone; others: themselves)."""
    return await accounts.get_user(scope(), user_id)


@bp.patch("/users/<int:user_id>")
@validate_request(UserPatch)
@validate_response(UserOut)
async def update_user(user_id: int, data: UserPatch) -> UserOut:
    """Change a user's role, assignments or password, or disable them with ``active: false`` (admins only)."""
    return await accounts.update_user(scope(), user_id, data)


@bp.get("/tokens")
@validate_querystring(PageArgs)
@validate_response(TokenPage)
async def list_tokens(query_args: PageArgs) -> TokenPage:
    """Your API tokens."""
    return await accounts.list_tokens(scope(), query_args)


@bp.post("/tokens")
@validate_request(TokenIn)
@validate_response(TokenCreated, 201)
async def create_token(data: TokenIn) -> tuple[TokenCreated, int]:
    """A new API token for yourself, shown once in this answer."""
    return await accounts.create_token(scope(), data), 201


@bp.delete("/tokens/<int:token_id>")
async def revoke_token(token_id: int) -> tuple[str, int]:
    """Revoke one of your API tokens."""
    await accounts.revoke_token(scope(), token_id)
    return "", 204


@bp.get("/audit")
@validate_querystring(AuditFilter)
@validate_response(AuditPage)
async def audit_log(query_args: AuditFilter) -> AuditPage:
    """Recorded changes, newest first: all of them for admins, your retailers' for everyone else."""
    return await list_audit(scope(), query_args)
