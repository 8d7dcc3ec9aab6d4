"""Key rotation: re-encrypt every stored secret under the key ring's primary key, while the hub keeps serving.

A stored secret is any ``secrets_blob`` text field of a model that also carries ``retailer_id`` (the blob is
bound to its tenant); models are discovered from tortoise's registry, so a new table with secrets is rotated
without a change here.

Rows are rewritten in small batches, each in its own transaction, and each row only if its blob is still the
one that was read: a technician saving new secrets meanwhile wins (their save is already under the primary
key, since every hub process with the new ring seals with it). Running it again is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tortoise import Tortoise
from tortoise.models import Model

from grocerysync.hub.crypto import SecretBox, SecretsError, blob_key_id
from grocerysync.hub.db import APP, transaction

BLOB_FIELD = "secrets_blob"


@dataclass
class RotationReport:
    """What a rotation did: rows rewritten, already current, changed meanwhile, and rows it could not open."""

    rewritten: int = 0
    current: int = 0
    changed_meanwhile: int = 0
    failed: list[str] = field(default_factory=list)
    # Key ids still found in rows after the run, with their counts (empty when only the primary key is used).
    remaining: dict[str, int] = field(default_factory=dict)


def secret_models() -> list[type[Model]]:
    """Every model that stores encrypted secrets (a ``secrets_blob`` field next to ``retailer_id``)."""
    apps = Tortoise.apps
    if apps is None:
        raise RuntimeError("the database is not open")
    return [
        model
        for model in apps.get_models_iterable()
        if model._meta.app == APP and {BLOB_FIELD, "retailer_id"} <= set(model._meta.fields_db_projection)
    ]


async def rotate_secrets(box: SecretBox, *, batch_size: int = 100, dry_run: bool = False) -> RotationReport:
    """Re-encrypt every blob not sealed by ``box``'s primary key; with ``dry_run`` only count them."""
    report = RotationReport()
    for model in secret_models():
        pk, last_pk = model._meta.pk_attr, None
        while True:
            qs = model.all().order_by(pk).limit(batch_size)
            if last_pk is not None:
                qs = qs.filter(**{f"{pk}__gt": last_pk})
            rows = await qs.values(pk, "retailer_id", BLOB_FIELD)
            if not rows:
                break
            last_pk = rows[-1][pk]
            await _rotate_batch(model, box, rows, report, dry_run)
    return report


async def _rotate_batch(
    model: type[Model], box: SecretBox, rows: list[dict[str, Any]], report: RotationReport, dry_run: bool
) -> None:
    async with transaction(model._meta.default_connection):
        for row in rows:
            blob: str = row[BLOB_FIELD]
            if not box.needs_rotation(blob):
                report.current += bool(blob)
                continue
            row_pk = row[model._meta.pk_attr]
            where = f"{model.__name__} {row_pk} (retailer {row['retailer_id']})"
            try:
                new = box.reencrypt(blob, retailer_id=int(row["retailer_id"]))
            except SecretsError as exc:
                report.failed.append(f"{where}: {exc}")
                _count_remaining(report, blob)
                continue
            if dry_run:
                report.rewritten += 1
                _count_remaining(report, blob)
                continue
            # Only if nobody saved the row since it was read; QuerySet.update leaves updated_at alone.
            changed = await model.filter(pk=row_pk, **{BLOB_FIELD: blob}).update(**{BLOB_FIELD: new})
            if changed:
                report.rewritten += 1
            else:
                report.changed_meanwhile += 1


def _count_remaining(report: RotationReport, blob: str) -> None:
    kid = blob_key_id(blob) or "malformed"
    report.remaining[kid] = report.remaining.get(kid, 0) + 1
