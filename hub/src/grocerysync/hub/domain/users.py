"""Users, their retailer assignments, and API tokens (not tenant-owned: they define what a tenant sees)."""

from __future__ import annotations

import re

from tortoise.exceptions import IntegrityError

from grocerysync.hub.errors import Conflict, Invalid, NotFound, Unauthorized
from grocerysync.hub.models import ApiToken, Retailer, Role, User, UserRetailer
from grocerysync.hub.scope import SYSTEM, Principal, Scope, principal_for
from grocerysync.hub.security import hash_password, new_token, token_hash

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 10


async def create_user(
    email: str,
    role: Role,
    password: str,
    *,
    all_retailers: bool = False,
    retailer_ids: list[int] | None = None,
    scope: Scope | None = None,
) -> User:
    """A new user with an argon2 password hash, assigned to ``retailer_ids`` (which ``scope`` must see)."""
    scope = scope or Scope(SYSTEM)
    scope.require_admin()
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise Invalid(f"{email!r} is not an email address", [{"field": "email", "message": "not an email address"}])
    if len(password) < MIN_PASSWORD:
        raise Invalid(
            f"the password must have at least {MIN_PASSWORD} characters",
            [{"field": "password", "message": f"at least {MIN_PASSWORD} characters"}],
        )
    for rid in retailer_ids or []:
        if not await scope.query(Retailer).filter(id=rid).exists():
            raise NotFound(f"retailer {rid} not found; create it first or leave it out")
    try:
        user = await User.create(
            email=email, role=role, password_hash=hash_password(password), all_retailers=all_retailers
        )
    except IntegrityError:
        raise Conflict(f"a user with email {email} already exists") from None
    for rid in retailer_ids or []:
        await UserRetailer.create(user=user, retailer_id=rid)
    return user


async def create_token(email: str, name: str = "") -> str:
    """A new API token for the user; the token is returned once and only its hash is kept."""
    user = await User.get_or_none(email=email.strip().lower())
    if user is None:
        raise NotFound(f"no user with email {email}; create it with 'grocerysync-hub create-user'")
    token, prefix, digest = new_token()
    await ApiToken.create(user=user, name=name, prefix=prefix, token_hash=digest)
    return token


async def authenticate_token(token: str) -> Principal:
    """The principal of a bearer token; Unauthorized for unknown, revoked, or inactive users' tokens."""
    row = await ApiToken.get_or_none(token_hash=token_hash(token), revoked=False).select_related("user")
    if row is None or not row.user.active:
        raise Unauthorized("the API token is unknown or revoked; create one with 'grocerysync-hub create-token'")
    return await principal_for(row.user)
