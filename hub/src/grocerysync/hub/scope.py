"""Tenant isolation, in one place.

Every query for a tenant-owned model (:data:`grocerysync.hub.models.TENANT_MODELS`) goes through a
:class:`Scope` built from the authenticated principal: ``scope.query(Model)`` sees only the retailers the
principal may see, and ``scope.get(Model, id)`` answers :class:`NotFound` for anything else, exactly as for
an id that does not exist, so another tenant's objects cannot even be confirmed to exist. A test greps
the rest of the hub for direct queries on tenant-owned models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet

from grocerysync.hub.errors import Forbidden, NotFound
from grocerysync.hub.models import TENANT_MODELS, Retailer, Role, User, UserRetailer

M = TypeVar("M", bound=Model)

_LABELS = {
    "Retailer": "retailer",
    "Store": "store",
    "PosConnection": "POS connection",
    "DestinationConfig": "destination",
    "ExportJob": "export job",
    "AuditEntry": "audit entry",
    "Run": "run",
    "RunRejection": "rejection",
    "LogEntry": "log entry",
    "Agent": "agent",
    "EnrollmentToken": "enrollment token",
    "AgentCommand": "agent command",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user, their role, and the retailers they may see (None: all of them)."""

    user_id: int
    email: str
    role: Role
    retailer_ids: frozenset[int] | None

    @property
    def can_write(self) -> bool:
        """Admins and technicians configure and run; viewers only read."""
        return self.role in (Role.ADMIN, Role.TECHNICIAN)


#: The command line acts as an admin who sees every retailer.
SYSTEM = Principal(user_id=0, email="grocerysync-hub command line", role=Role.ADMIN, retailer_ids=None)


async def principal_for(user: User) -> Principal:
    """The principal of a signed-in user, with their retailer assignments loaded once."""
    ids: frozenset[int] | None = None
    if user.role != Role.ADMIN and not user.all_retailers:
        # The assignment table is not tenant-owned: it is what tenant scoping is built from.
        rows = await UserRetailer.filter(user_id=user.id).values_list("retailer_id", flat=True)
        ids = frozenset(int(r) for r in rows)  # type: ignore[call-overload]  # values_list(flat=True) is typed as tuples
    return Principal(user_id=int(user.id), email=user.email, role=Role(user.role), retailer_ids=ids)


def label(model: type[Model]) -> str:
    """How a model is named in messages."""
    return _LABELS.get(model.__name__, model.__name__)


class Scope:
    """The only way the hub queries tenant-owned models on behalf of a principal."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def __repr__(self) -> str:
        return f"Scope(user={self.principal.email!r}, role={self.principal.role.value!r})"

    def query(self, model: type[M]) -> QuerySet[M]:
        """A queryset of ``model`` limited to the retailers the principal may see."""
        if model not in TENANT_MODELS:
            raise TypeError(f"{model.__name__} is not tenant-owned; Scope only queries tenant-owned models")
        ids = self.principal.retailer_ids
        if ids is None:
            return model.all()
        if model is Retailer:
            return model.filter(id__in=list(ids))
        return model.filter(retailer_id__in=list(ids))

    async def get(self, model: type[M], object_id: Any) -> M:
        """The object, or NotFound if it does not exist or belongs to a retailer the principal cannot see."""
        try:
            pk = int(object_id)
        except (TypeError, ValueError):
            pk = -1
        obj = await self.query(model).get_or_none(id=pk) if pk >= 0 else None
        if obj is None:
            raise NotFound(f"{label(model)} {object_id} not found (or not visible to {self.principal.email})")
        return obj

    def sees_retailer(self, retailer_id: int) -> bool:
        """Whether the principal may see this retailer at all."""
        ids = self.principal.retailer_ids
        return ids is None or retailer_id in ids

    @property
    def sees_all(self) -> bool:
        """Whether the principal sees every retailer (admins, and users with ``all_retailers``)."""
        return self.principal.retailer_ids is None

    def require_write(self) -> None:
        """Refuse writes to viewers. Call it after the object was found, so other tenants' objects stay 404."""
        if not self.principal.can_write:
            raise Forbidden(f"{self.principal.email} is a viewer and cannot change anything; ask an admin")

    def require_admin(self) -> None:
        """Refuse anything but admins."""
        if self.principal.role != Role.ADMIN:
            raise Forbidden(f"only admins can do this; {self.principal.email} is a {self.principal.role.value}")
