"""aiosqlite connections whose statements take one trip to the connection's thread instead of four.

SQLAlchemy's aiosqlite adapter awaits the cursor's creation, `execute`, `fetchall` and `close`
separately, and each await is a hand-off to aiosqlite's thread and a wake-up of the event loop. Here
the cursor runs all four in one hand-off and keeps the rows; the rest of the connection (commit,
rollback, close, the thread) is aiosqlite's own.

A commit or rollback with no transaction open is skipped. SQLAlchemy's pool rolls back a
connection it gets back after reads, although a plain SELECT opens no transaction in sqlite3: a
hand-off that changes nothing, once per read. Whether a transaction is open is read in the
connection's thread after each statement.

Inside `Database.read` and `Database.write` (a reply's short transactions), statements run on the
event loop's own thread instead: a hand-off wakes both threads, which costs several times the work
of an indexed statement. They never wait there for another writer's lock: they run with no busy
timeout, and one that finds the database locked runs again in aiosqlite's thread, where it waits as
long as the connection's busy timeout allows. Commits and rollbacks always run in that thread, as
WAL checkpoints (disk writes and syncs) happen in them.

`connector(url, busy_timeout_ms)` is SQLAlchemy's `async_creator`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url

from core.storage.database import SHORT_STATEMENTS

Statement = Callable[..., None]
_LOCK_ERRORS = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class OneTripCursor:
    """The part of aiosqlite's cursor that SQLAlchemy uses, with results kept after one trip."""

    arraysize = 1

    def __init__(self, connection: aiosqlite.Connection, owner: OneTripConnection) -> None:
        self._connection = connection
        self._owner = owner
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> OneTripCursor:
        await self._owner.run(self._run, sqlite3.Cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneTripCursor:
        await self._owner.run(self._run, sqlite3.Cursor.executemany, sql, list(parameters))
        return self

    def _run(self, method: Callable[[sqlite3.Cursor, str, Any], object], sql: str, parameters: Any) -> None:
        """In aiosqlite's thread: execute, keep what SQLAlchemy reads afterwards, close."""
        connection = self._connection._conn
        cursor = connection.cursor()
        try:
            method(cursor, sql, parameters)
            self.description = cursor.description
            self.rowcount = cursor.rowcount
            self.lastrowid = cursor.lastrowid
            self._rows = cursor.fetchall() if cursor.description else []
        finally:
            cursor.close()
            try:
                self._owner.in_transaction = connection.in_transaction
            except sqlite3.Error:  # closed: a rollback will say so
                self._owner.in_transaction = True

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def close(self) -> None:
        self._rows = []


async def _in_thread(connection: aiosqlite.Connection, function: Callable[..., None], *args: Any) -> None:
    """Run `function(*args)` in the connection's thread, in order with its other work (as SQLAlchemy's
    own aiosqlite adapter does through the same private queue)."""
    await connection._execute(function, *args)  # type: ignore[no-untyped-call]


class OneTripConnection:
    """An aiosqlite connection whose cursors are `OneTripCursor`s, and whose commit and rollback are
    skipped when no transaction is open; everything else is delegated."""

    # What SQLAlchemy's adapter reads on its own (to check the connection, set the isolation level):
    # none of it opens a transaction. Anything else might, so it makes the state unknown.
    _KEEPS_STATE = frozenset({"_connection", "_conn", "_tx", "isolation_level", "close", "stop"})

    def __init__(self, connection: aiosqlite.Connection, busy_timeout_ms: int) -> None:
        self._inner = connection
        self._busy_timeout_ms = busy_timeout_ms
        self._waits = True  # whether the busy timeout is set (False: 0, for statements on the loop)
        self.in_transaction = True  # unknown until a statement, commit or rollback ran here

    def cursor(self) -> OneTripCursor:
        return OneTripCursor(self._inner, self)

    async def run(self, statement: Statement, *args: Any) -> None:
        """`statement(*args)` on the loop's thread for `Database.read` / `Database.write`, else (or if
        it finds the database locked) in the connection's thread."""
        if SHORT_STATEMENTS.get():
            connection = self._inner._conn
            changes = connection.total_changes
            try:
                self._wait_for_locks(False)
                statement(*args)
                return
            except sqlite3.OperationalError as exc:
                # Locked before it changed anything: it runs again where it may wait.
                if exc.sqlite_errorcode & 0xFF not in _LOCK_ERRORS or connection.total_changes != changes:
                    raise
        await _in_thread(self._inner, self._waiting, statement, *args)

    async def commit(self) -> None:
        if self.in_transaction:
            await _in_thread(self._inner, self._waiting, self._inner._conn.commit)
            self.in_transaction = False

    async def rollback(self) -> None:
        if self.in_transaction:
            await _in_thread(self._inner, self._waiting, self._inner._conn.rollback)
            self.in_transaction = False

    def _waiting(self, function: Callable[..., None], *args: Any) -> None:
        """In the connection's thread: `function(*args)` with the busy timeout set."""
        self._wait_for_locks(True)
        function(*args)

    def _wait_for_locks(self, wait: bool) -> None:
        if wait != self._waits:
            timeout = self._busy_timeout_ms if wait else 0
            self._inner._conn.execute(f"PRAGMA busy_timeout={timeout}").close()
            self._waits = wait

    def __getattr__(self, name: str) -> Any:
        if name not in self._KEEPS_STATE:
            self.in_transaction = True
        return getattr(self._inner, name)


def connector(url: str, busy_timeout_ms: int) -> Callable[[], Coroutine[Any, Any, OneTripConnection]]:
    """SQLAlchemy's `async_creator` for this URL: the arguments its aiosqlite dialect would use, with
    the busy timeout given; the connection may be used from the loop's thread too."""
    args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
    kwargs.update(check_same_thread=False, timeout=busy_timeout_ms / 1000)

    async def connect() -> OneTripConnection:
        pending = aiosqlite.connect(*args, **kwargs)
        pending._thread.daemon = True  # as SQLAlchemy does: a forgotten connection must not block exit
        return OneTripConnection(await pending, busy_timeout_ms)

    return connect
