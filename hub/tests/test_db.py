"""The one migration history: up to date with the models, and applied alike on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tortoise import Tortoise
from tortoise.migrations.autodetector import MigrationAutodetector

from grocerysync.hub.db import MIGRATION_CONFIG, migrate, tortoise_config
from grocerysync.hub.models import TENANT_MODELS, Retailer, Store
from grocerysync.hub.settings import Settings

MIGRATIONS_DIR = Path(__file__).parents[1] / "src" / "grocerysync" / "hub" / "migrations"


async def test_migrations_match_the_models() -> None:
    ctx = await Tortoise.init(config=MIGRATION_CONFIG, init_connections=False)
    try:
        writers = await MigrationAutodetector(ctx.apps, MIGRATION_CONFIG["apps"]).changes()
    finally:
        await Tortoise.close_connections()
    assert [w.name for w in writers] == [], "run makemigrations (see grocerysync.hub.db) and commit the file"


async def test_migrate_is_repeatable_and_builds_every_table(settings: Settings) -> None:
    # The fixture migrated once already; a second run must be a no-op.
    await migrate(settings)
    await Tortoise.init(config=tortoise_config(settings.db_url()))
    try:
        conn = Tortoise.get_connection(settings.db_url().split(":", 1)[0])
        _, applied = await conn.execute_query("SELECT name FROM tortoise_migrations")
        history = sorted(p.stem for p in MIGRATIONS_DIR.glob("0*.py"))
        assert sorted(row["name"] for row in applied) == history
        assert history[0] == "0001_initial"
        retailer = await Retailer.create(name="R")
        store = await Store.create(retailer=retailer, name="S", time_zone="Europe/Paris")
        assert store.retailer_id == retailer.id
        for model in (m for m in TENANT_MODELS if m is not Retailer):  # a retailer is its own tenant
            assert "retailer_id" in model._meta.fields_db_projection.values(), model.__name__
    finally:
        await Tortoise.close_connections()
