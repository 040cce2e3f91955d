"""SQLite connections whose statements take one trip to aiosqlite's thread (or, for a reply's short
transactions, none) behave as SQLAlchemy expects."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from core.storage.database import Database
from core.storage.sqlite_driver import OneTripConnection, OneTripCursor

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


def _name_of(function: Any, args: tuple[Any, ...]) -> str:
    """What a trip to aiosqlite's thread runs: a statement (`_run`), a commit, a rollback."""
    name = getattr(function, "__name__", "statement")
    return getattr(args[0], "__name__", "statement") if name == "_waiting" else name


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The trips to aiosqlite's thread from now on, by what they run (see `_name_of`)."""
    made: list[str] = []
    execute = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, function: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(_name_of(function, args))
        return await execute(self, function, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return made


async def test_only_an_open_transaction_costs_a_rollback(tmp_path: Path, trips: list[str]) -> None:
    """The pool rolls back every connection it gets back; with nothing to undo, no trip is made."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}")
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        trips.clear()
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


def _insert(connection: Connection, name: str) -> None:
    connection.execute(insert(items), {"name": name})


def _all_names(connection: Connection) -> list[str]:
    return list(connection.execute(select(items.c.name).order_by(items.c.id)).scalars())


async def test_a_replys_statements_run_on_the_loop_and_only_commits_take_a_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trips: list[str]
) -> None:
    threads: list[int] = []
    run = OneTripCursor._run

    def located(self: OneTripCursor, *args: Any) -> None:
        threads.append(threading.get_ident())
        run(self, *args)

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'loop.db'}")
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        trips.clear()
        monkeypatch.setattr(OneTripCursor, "_run", located)
        await db.write(lambda connection: (_insert(connection, "a"), _insert(connection, "b")))
        assert await db.read(_all_names) == ["a", "b"]
        assert trips == ["commit"]
        assert threads == [threading.get_ident()] * 3
        trips.clear()
        threads.clear()
        async with db.engine.connect() as connection:  # elsewhere, statements keep to aiosqlite's thread
            await connection.execute(select(items.c.id))
        assert len(trips) == 1 and threads == [threads[0]] and threads[0] != threading.get_ident()
    finally:
        await db.aclose()


async def test_a_locked_database_is_waited_for_in_aiosqlites_thread_not_on_the_loop(tmp_path: Path) -> None:
    """Another writer holds the lock for 0.5 s: the loop keeps running, and the write lands after."""
    path = tmp_path / "locked.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO items (name) VALUES ('other')")
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, other.execute, "COMMIT")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = loop.time()
        await db.write(lambda connection: _insert(connection, "mine"))
        waited = loop.time() - started
        ticker.cancel()
        assert waited >= 0.45  # it did wait for the lock...
        assert ticks >= 20  # ...while the loop ran on (it would be 0 with the loop blocked)
        assert await db.read(_all_names) == ["other", "mine"]
        # The connection waits in its thread only: the next statements on the loop still fail fast.
        other.execute("BEGIN IMMEDIATE")
        loop.call_later(0.3, other.execute, "ROLLBACK")
        ticks = 0
        ticker = asyncio.create_task(tick())
        await db.write(lambda connection: _insert(connection, "again"))
        ticker.cancel()
        assert ticks >= 10
        assert await db.read(_all_names) == ["other", "mine", "again"]
    finally:
        other.close()
        await db.aclose()
