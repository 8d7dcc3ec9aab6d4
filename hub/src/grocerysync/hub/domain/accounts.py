"""Managing users (admins) and one's own API tokens, with every change in the audit log.

Users and tokens are not tenant-owned: admins manage all of them, and everyone else sees only themselves
(another user answers 404, like another tenant's object).
"""

from __future__ import annotations

from collections.abc import Iterable

from grocerysync.hub.domain import users
from grocerysync.hub.domain.common import audit, snapshot
from grocerysync.hub.errors import Conflict, Invalid, NotFound
from grocerysync.hub.models import ApiToken, Retailer, Role, User, UserRetailer
from grocerysync.hub.schemas import PageArgs
from grocerysync.hub.schemas_admin import (
    TokenCreated,
    TokenIn,
    TokenOut,
    TokenPage,
    UserFilter,
    UserIn,
    UserOut,
    UserPage,
    UserPatch,
)
from grocerysync.hub.scope import Scope
from grocerysync.hub.security import hash_password, new_token


async def _view(user: User) -> UserOut:
    ids = await UserRetailer.filter(user_id=user.id).order_by("retailer_id").values_list("retailer_id", flat=True)
    return UserOut(
        id=user.id,
        email=user.email,
        role=Role(user.role),
        all_retailers=user.all_retailers,
        retailer_ids=[int(i) for i in ids],  # type: ignore[call-overload]  # values_list(flat=True) is typed as tuples
        active=user.active,
        created_at=user.created_at,
    )


def _audit_view(view: UserOut) -> dict[str, object]:
    return view.model_dump(mode="json", exclude={"created_at"})


async def _visible_user(scope: Scope, user_id: int) -> User:
    """The user, if the principal may see it: admins see everyone, others only themselves."""
    me = scope.principal
    user = await User.get_or_none(id=user_id) if 0 < user_id < 2**31 else None
    if user is None or (me.role != Role.ADMIN and user.id != me.user_id):
        raise NotFound(f"user {user_id} not found (or not visible to {me.email})")
    return user


async def _check_retailers(scope: Scope, ids: Iterable[int]) -> list[int]:
    wanted = sorted(set(ids))
    found = {int(i) for i in await scope.query(Retailer).filter(id__in=wanted).values_list("id", flat=True)}  # type: ignore[call-overload]  # flat=True gives ids
    missing = [i for i in wanted if i not in found]
    if missing:
        message = f"no retailer {', '.join(map(str, missing))}; create it first or leave it out"
        raise Invalid(message, [{"field": "retailer_ids", "message": message}])
    return wanted


async def list_users(scope: Scope, args: UserFilter) -> UserPage:
    """Every user for admins; anyone else gets a list of one: themselves."""
    qs = User.all()
    if scope.principal.role != Role.ADMIN:
        qs = qs.filter(id=scope.principal.user_id)
    if args.role is not None:
        qs = qs.filter(role=args.role)
    if args.active is not None:
        qs = qs.filter(active=args.active)
    total = await qs.count()
    rows = await qs.order_by("id").offset(args.offset).limit(args.limit)
    return UserPage(items=[await _view(u) for u in rows], total=total, limit=args.limit, offset=args.offset)


async def get_user(scope: Scope, user_id: int) -> UserOut:
    """One user (admins: anyone, others: themselves)."""
    return await _view(await _visible_user(scope, user_id))


async def create_user(scope: Scope, data: UserIn) -> UserOut:
    """A new user with a role and retailer assignments (admins only)."""
    scope.require_admin()
    retailer_ids = await _check_retailers(scope, data.retailer_ids)
    user = await users.create_user(
        data.email,
        data.role,
        data.password.get_secret_value(),
        all_retailers=data.all_retailers,
        retailer_ids=retailer_ids,
        scope=scope,
    )
    view = await _view(user)
    await audit(scope, "create", user, retailer_id=None, after=_audit_view(view))
    return view


async def _active_admins_besides(user_id: int) -> int:
    return await User.filter(role=Role.ADMIN, active=True).exclude(id=user_id).count()


async def update_user(scope: Scope, user_id: int, data: UserPatch) -> UserOut:
    """Change a user's role, assignments, password or whether they may sign in (admins only).

    The last active admin cannot be demoted or disabled: nobody could manage users any more.
    """
    user = await _visible_user(scope, user_id)
    scope.require_admin()
    before = _audit_view(await _view(user))
    demoted = data.role is not None and data.role != Role.ADMIN
    disabled = data.active is False
    if user.role == Role.ADMIN and user.active and (demoted or disabled) and not await _active_admins_besides(user.id):
        raise Conflict(f"{user.email} is the last active admin; make another user an admin first")
    if data.password is not None:
        password = data.password.get_secret_value()
        if len(password) < users.MIN_PASSWORD:
            message = f"at least {users.MIN_PASSWORD} characters"
            raise Invalid(f"the password must have {message}", [{"field": "password", "message": message}])
        user.password_hash = hash_password(password)
    if data.role is not None:
        user.role = data.role
    if data.all_retailers is not None:
        user.all_retailers = data.all_retailers
    if data.active is not None:
        user.active = data.active
    if data.retailer_ids is not None:
        wanted = await _check_retailers(scope, data.retailer_ids)
        await UserRetailer.filter(user_id=user.id).delete()
        await UserRetailer.bulk_create([UserRetailer(user_id=user.id, retailer_id=rid) for rid in wanted])
    await user.save()
    view = await _view(user)
    after = _audit_view(view)
    if data.password is not None:
        # Only that it changed: never the hash.
        after["password"] = "changed"  # noqa: S105 (a marker, not a secret)
    await audit(scope, "update", user, retailer_id=None, before=before, after=after)
    return view


# --- your own API tokens ----------------------------------------------------------------------------------


async def list_tokens(scope: Scope, args: PageArgs) -> TokenPage:
    """Your API tokens (revoked ones included, marked)."""
    qs = ApiToken.filter(user_id=scope.principal.user_id)
    total = await qs.count()
    rows = await qs.order_by("id").offset(args.offset).limit(args.limit)
    return TokenPage.model_validate({"items": rows, "total": total, "limit": args.limit, "offset": args.offset})


async def create_token(scope: Scope, data: TokenIn) -> TokenCreated:
    """A new API token for yourself; the token itself is in this answer only."""
    user = await User.get_or_none(id=scope.principal.user_id)
    if user is None:
        raise NotFound("only users have API tokens; create one with 'grocerysync-hub create-user'")
    token, prefix, digest = new_token()
    row = await ApiToken.create(user=user, name=data.name, prefix=prefix, token_hash=digest)
    await audit(scope, "create", row, retailer_id=None, after=snapshot(TokenOut, row))
    return TokenCreated.model_validate({**TokenOut.model_validate(row).model_dump(), "token": token})


async def revoke_token(scope: Scope, token_id: int) -> None:
    """Revoke one of your API tokens; it stops working at once. Other people's tokens answer 404."""
    row = await ApiToken.get_or_none(id=token_id, user_id=scope.principal.user_id) if 0 < token_id < 2**31 else None
    if row is None:
        raise NotFound(f"API token {token_id} not found among {scope.principal.email}'s tokens")
    if row.revoked:
        return
    before = snapshot(TokenOut, row)
    row.revoked = True
    await row.save(update_fields=["revoked"])
    await audit(scope, "revoke", row, retailer_id=None, before=before, after=snapshot(TokenOut, row))
