"""The async engine and sessions; SQLite (WAL, busy timeout) or PostgreSQL (asyncpg)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, CursorResult, Engine, Executable, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState
from sqlalchemy.sql.dml import Insert
from sqlalchemy.util import greenlet_spawn

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 10_000

# True while `Database.read` / `Database.write` run: their statements are few, short and indexed, so
# the SQLite driver runs them on the loop's thread (see core.storage.sqlite_driver).
SHORT_STATEMENTS: ContextVar[bool] = ContextVar("threadline_short_statements", default=False)


@contextmanager
def _short_statements() -> Iterator[None]:
    token = SHORT_STATEMENTS.set(True)
    try:
        yield
    finally:
        SHORT_STATEMENTS.reset(token)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # the busy timeout is the driver's (see sqlite_driver)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _rollback_if_in_transaction(
    dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _state: PoolResetState
) -> None:
    """Reset a connection returned to the pool only when SQLite says a transaction is open.

    The default reset rolls back after every commit too; with aiosqlite every call is a hop to its
    thread, so that redundant rollback cost a fifth of a typical statement's round trips.
    """
    if getattr(record.driver_connection, "in_transaction", True):
        dbapi_connection.rollback()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if is_sqlite(url):
        from core.storage.sqlite_driver import connector

        creator = connector(url, SQLITE_BUSY_TIMEOUT_MS)
        engine = create_async_engine(url, pool_reset_on_return=None, async_creator=creator, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "reset", _rollback_if_in_transaction)
        return engine
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement built once, with the values of one execution.

    On the per-reply path, building a statement (a bind parameter and a cache key per value) cost
    more CPU than SQLite running it; a statement built once is compiled once and reused.
    """

    statement: Executable
    params: dict[str, Any]

    async def run(self, connection: AsyncConnection) -> CursorResult[Any]:
        return await connection.execute(self.statement, self.params)

    def execute(self, connection: Connection) -> CursorResult[Any]:
        """The same on a synchronous connection (inside `Database.write` / `Database.read`)."""
        return connection.execute(self.statement, self.params)


@functools.cache
def insert_ignoring_duplicates(sqlite_dialect: bool, table: Any) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING for the dialect, built once per table."""
    if sqlite_dialect:
        return sqlite.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import postgresql  # ~2 MiB that a SQLite deployment never needs

    return postgresql.insert(table).on_conflict_do_nothing()


class Database:
    """Owns the engine and hands out sessions; one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._on_close: list[Callable[[], None]] = []

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    def insert_ignoring_duplicates(self, table: Any) -> Insert:
        """INSERT ... ON CONFLICT DO NOTHING: rows another writer (replica) added first are skipped.

        Built once per table; give the values at execution.
        """
        return insert_ignoring_duplicates(self.is_sqlite, table)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def write(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` in one transaction, committed unless it raises.

        `work` is synchronous SQLAlchemy Core on a plain `Connection`, run the way AsyncConnection
        runs each of its calls (and `run_sync`): with SQLAlchemy's `greenlet_spawn`, in a greenlet
        that awaits only the driver. It must not await anything else, nor block.

        One greenlet for the whole transaction instead of one per call (connect, begin, each
        statement, commit, close): a reply's database work costs about a fifth less CPU this way
        (`python -m bench.bench_database`).

        The work must be a few short, indexed statements: on SQLite they run on the loop's thread
        (see core.storage.sqlite_driver).
        """
        with _short_statements():
            return await greenlet_spawn(_write, self.engine.sync_engine, work)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` on a connection that is given back without committing (reads); the same
        rule as for `write`: a few short, indexed statements."""
        with _short_statements():
            return await greenlet_spawn(_read, self.engine.sync_engine, work)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the database is closed (e.g. to close a connection opened beside the pool).

        Not an engine event: any connection event listener on the engine makes every statement check
        for listeners, which cost about a tenth of a reply's database work.
        """
        self._on_close.append(callback)

    async def aclose(self) -> None:
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()
        await self.engine.dispose()


def _write(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as connection:
        return work(connection)


def _read(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as connection:
        return work(connection)
