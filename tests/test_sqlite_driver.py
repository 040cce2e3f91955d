"""SQLite connections whose statements take one trip to aiosqlite's thread behave as SQLAlchemy expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from core.storage.database import Database
from core.storage.sqlite_driver import OneTripConnection

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String, unique=True))


async def test_rows_counts_ids_and_errors_come_back_as_with_aiosqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    try:
        async with db.engine.begin() as connection:
            raw = await connection.get_raw_connection()
            assert isinstance(raw.driver_connection, OneTripConnection)
            await connection.run_sync(metadata.create_all)
            first = await connection.execute(insert(items).returning(items.c.id), {"name": "a"})
            assert first.scalar_one() == 1
            plain = await connection.execute(insert(items), {"name": "b"})
            assert plain.inserted_primary_key == (2,)
            many = await connection.execute(insert(items), [{"name": f"n{i}"} for i in range(5)])
            assert many.rowcount == 5
            changed = await connection.execute(
                update(items).where(items.c.id <= 2).values(name=items.c.name + "!")
            )
            assert changed.rowcount == 2
        async with db.engine.connect() as connection:
            rows = (await connection.execute(select(items.c.name).order_by(items.c.id))).scalars().all()
            assert rows == ["a!", "b!", "n0", "n1", "n2", "n3", "n4"]
            partial = await connection.execute(select(items.c.id).order_by(items.c.id))
            assert partial.fetchmany(2) == [(1,), (2,)] and len(partial.fetchall()) == 5
        with pytest.raises(IntegrityError):
            async with db.engine.begin() as connection:
                await connection.execute(insert(items), {"name": "a!"})
        with pytest.raises(OperationalError):
            async with db.engine.connect() as connection:
                await connection.execute(text("SELECT * FROM no_such_table"))
        async with db.engine.connect() as connection:  # the failed transaction was rolled back
            count = (await connection.execute(select(items.c.id))).all()
            assert len(count) == 7
    finally:
        await db.aclose()


async def test_only_an_open_transaction_costs_a_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool rolls back every connection it gets back; with nothing to undo, no trip is made."""
    trips: list[str] = []
    execute = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, function: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(function, "__name__", "statement"))
        return await execute(self, function, *args, **kwargs)

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}")
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        async with db.engine.begin() as connection:
            await connection.execute(insert(items), {"name": "kept"})
        assert trips == ["_run", "commit"]
        trips.clear()
        async with db.engine.connect() as connection:
            assert (await connection.execute(select(items.c.name))).scalars().all() == ["kept"]
        assert trips == ["_run"]
        trips.clear()
        # A failure inside a transaction leaves it open: the rollback still happens, and undoes it all.
        with pytest.raises(IntegrityError):
            async with db.engine.begin() as connection:
                await connection.execute(insert(items), {"name": "undone"})
                await connection.execute(insert(items), {"name": "kept"})
        assert trips == ["_run", "_run", "rollback"]
        async with db.engine.connect() as connection:
            assert (await connection.execute(select(items.c.name))).scalars().all() == ["kept"]
    finally:
        await db.aclose()
