"""Alembic is the only schema path: migrations and models agree, and they go up and down."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from core.config import async_database_url
from core.storage.database import Database
from core.storage.migrate import (
    HEAD_REVISION,
    alembic_config,
    at_head,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
    upgrade_if_needed,
    upgrade_in_child,
)
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


def test_head_revision_constant_is_alembics_head() -> None:
    """A new migration must update HEAD_REVISION, or a database at the old head would pass for current."""
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [HEAD_REVISION], (
        "core/storage/migrate.py HEAD_REVISION must name the newest migration in migrations/versions"
    )
    assert head_revision() == HEAD_REVISION


def _alembic_reads(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def test_plain_sql_revision_agrees_with_alembic(database_url: str) -> None:
    db = Database(async_database_url(database_url))
    try:
        assert await current_revision(db) is None  # no alembic_version table yet
        assert not await at_head(db)
        assert await upgrade_if_needed(db) is True
        assert await current_revision(db) == HEAD_REVISION
        assert await upgrade_if_needed(db) is False  # at head: Alembic is not run
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_alembic_reads) == HEAD_REVISION

        await downgrade(db, "base")  # the version table stays, empty
        assert await current_revision(db) is None
        assert not await at_head(db)
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_alembic_reads) is None
        assert await upgrade_if_needed(db) is True
        assert await at_head(db)
    finally:
        await db.aclose()


async def test_upgrade_in_a_child_process(database_url: str) -> None:
    """What `threadline run` does on a fresh database; replicas starting together take turns (PostgreSQL)."""
    url = async_database_url(database_url)
    starts = 3 if url.startswith("postgresql") else 1  # SQLite serves one process: no advisory lock
    assert await asyncio.gather(*(upgrade_in_child(url) for _ in range(starts))) == [None] * starts
    db = Database(url)
    try:
        assert await current_revision(db) == HEAD_REVISION
    finally:
        await db.aclose()


async def test_a_failed_child_upgrade_is_one_line(sqlite_url: str) -> None:
    url = async_database_url(sqlite_url)
    db = Database(url)
    try:
        await upgrade(db)
        async with db.transaction() as session:
            await session.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        assert not await at_head(db)
    finally:
        await db.aclose()
    reason = await upgrade_in_child(url)
    assert reason is not None and "\n" not in reason
    assert "9999" in reason, reason


async def test_an_unreachable_database_fails_the_child_in_one_line() -> None:
    reason = await upgrade_in_child("sqlite+aiosqlite:////nonexistent-dir/threadline.db")
    assert reason is not None and "\n" not in reason
    assert reason.startswith("OperationalError: ") and "unable to open database file" in reason
