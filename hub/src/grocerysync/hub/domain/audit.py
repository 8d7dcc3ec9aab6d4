"""Reading the audit log: admins see every entry, everyone else their retailers' entries only."""

from __future__ import annotations

from grocerysync.hub.domain.common import paginate
from grocerysync.hub.models import AuditEntry, Role
from grocerysync.hub.schemas_admin import AuditFilter, AuditPage
from grocerysync.hub.scope import Scope


async def list_audit(scope: Scope, args: AuditFilter) -> AuditPage:
    """Audit entries, newest first, filtered by retailer, actor, action, object and time.

    Entries outside any retailer (users, tokens, deleted retailers) are for admins only, even for people
    who see every retailer.
    """
    qs = scope.query(AuditEntry)
    if scope.principal.role != Role.ADMIN:
        qs = qs.filter(retailer_id__isnull=False)
    for name in ("retailer_id", "user_id", "actor", "action", "object_type", "object_id"):
        value = getattr(args, name)
        if value is not None:
            qs = qs.filter(**{name: value})
    if args.since is not None:
        qs = qs.filter(at__gte=args.since)
    if args.until is not None:
        qs = qs.filter(at__lt=args.until)
    return await paginate(qs, args, AuditPage, order=("-id",))
