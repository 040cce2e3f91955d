"""Alembic is the only schema path: migrations and models agree, and they go up and down."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from core.config import async_database_url
from core.storage.database import Database
from core.storage.migrate import current_revision, downgrade, head_revision, upgrade
from core.storage.models import Base

EXPECTED_TABLES = {
    "personas",
    "channel_settings",
    "conversations",
    "messages",
    "processed_events",
    "kv",
    "schedules",
}


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def test_migrations_match_models_and_round_trip(database_url: str) -> None:
    db = Database(async_database_url(database_url))
    try:
        await upgrade(db)
        assert await current_revision(db) == head_revision()
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
            assert await connection.run_sync(_tables) == EXPECTED_TABLES

        await downgrade(db, "base")
        assert await current_revision(db) is None
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_tables) == set()

        await upgrade(db)
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
        assert await current_revision(db) == head_revision()
    finally:
        await db.aclose()


async def test_sqlite_runs_in_wal_mode_with_busy_timeout(sqlite_url: str) -> None:
    from sqlalchemy import text

    db = Database(async_database_url(sqlite_url))
    try:
        async with db.session() as session:
            assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await session.execute(text("PRAGMA busy_timeout"))).scalar() == 10_000
    finally:
        await db.aclose()
