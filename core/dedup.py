"""De-duplication of platform events by their ids, in the database (survives restarts and replicas).

A claim writes every id of one event in a single statement and transaction. The ids this process
claimed or found claimed are also remembered in memory: a redelivery to this process is answered
without the database, and a second claim of an id whose first claim is still running waits for that
one instead of racing it. An id that is not remembered is always claimed in the database, which
stays the only authority between replicas and across restarts.

A claim sits between an event and the first visible answer, so on SQLite it is written by a
connection of its own on the event loop's thread (see `_SqliteClaims`) instead of a pooled
connection in a worker thread, whose hand-offs cost about a millisecond.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects import sqlite

from core.storage.database import Database
from core.storage.models import ProcessedEventRow

log = logging.getLogger("threadline.dedup")

REMEMBERED_IDS = 10_000

_Key = tuple[str, str]  # (platform, event id)
_SQLITE = sqlite.dialect()
_INSERT = (
    f"INSERT INTO {ProcessedEventRow.__tablename__} (platform, event_id, received_at) VALUES {{rows}} "
    "ON CONFLICT DO NOTHING"
)


@dataclass(slots=True)
class _Seen:
    settled: asyncio.Future[None]  # done once the database has the id; failed when the claim failed
    at: datetime


class ProcessedEvents:
    def __init__(self, db: Database, *, remembered: int = REMEMBERED_IDS) -> None:
        self._db = db
        self._remembered = remembered
        self._seen: OrderedDict[_Key, _Seen] = OrderedDict()
        self._sqlite = _SqliteClaims.for_database(db)

    async def claim(self, platform: str, *event_ids: str) -> bool:
        """True the first time the ids of an event are seen (all of them, e.g. an event id and the id
        of the message it carries); False when any of them was seen before (a redelivery)."""
        keys = list(dict.fromkeys((platform, event_id) for event_id in event_ids if event_id))
        if not keys:
            raise ValueError("claim() needs at least one event id")
        if await self._seen_before(keys):
            await self._record(keys)
            return False
        return await self._claim(keys)

    async def forget_before(self, moment: datetime) -> int:
        while self._seen and next(iter(self._seen.values())).at < moment:
            self._seen.popitem(last=False)
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(ProcessedEventRow).where(ProcessedEventRow.received_at < moment)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def _seen_before(self, keys: list[_Key]) -> bool:
        """Whether this process has claimed (or is claiming) one of the ids; waits for a claim in flight."""
        while True:
            seen = next((self._seen[key] for key in keys if key in self._seen), None)
            if seen is None:
                return False
            try:
                await asyncio.shield(seen.settled)
            except Exception:  # that claim failed and forgot its ids: look again
                continue
            return True

    async def _claim(self, keys: list[_Key]) -> bool:
        settled = self._remember(keys)
        try:
            inserted = await self._insert(keys)
        except BaseException as exc:
            self._forget(keys, settled)
            settled.set_exception(exc if isinstance(exc, Exception) else RuntimeError("claim cancelled"))
            settled.exception()  # retrieved: nobody may be waiting for it
            raise
        settled.set_result(None)
        return inserted == len(keys)

    async def _record(self, keys: list[_Key]) -> None:
        """Write the ids of a redelivery the database may not know yet (an event id of its own)."""
        new = [key for key in keys if key not in self._seen]
        if not new:
            return
        try:
            await self._claim(new)
        except Exception:
            log.warning("could not record the ids of a redelivered event", exc_info=True)

    def _remember(self, keys: Iterable[_Key]) -> asyncio.Future[None]:
        seen = _Seen(asyncio.get_running_loop().create_future(), datetime.now(UTC))
        for key in keys:
            self._seen[key] = seen
            self._seen.move_to_end(key)
        while len(self._seen) > self._remembered:
            self._seen.popitem(last=False)
        return seen.settled

    def _forget(self, keys: Iterable[_Key], settled: asyncio.Future[None]) -> None:
        for key in keys:
            seen = self._seen.get(key)
            if seen is not None and seen.settled is settled:
                del self._seen[key]

    async def _insert(self, keys: list[_Key]) -> int:
        """How many of the ids were new (the others were in the database already)."""
        rows = [{"platform": platform, "event_id": event_id} for platform, event_id in keys]
        if self._sqlite is not None:
            inserted = self._sqlite.insert(rows)
            if inserted is not None:
                return inserted
        async with self._db.engine.begin() as connection:
            result = await connection.execute(
                self._db.insert_ignoring_duplicates(ProcessedEventRow).values(rows)
            )
        return int(result.rowcount)


class _SqliteClaims:
    """One autocommit INSERT on the event loop's thread: about 50 µs instead of ~1 ms of thread hops.

    It never waits: no busy timeout (a writer holding the lock makes `insert` answer None, and the
    caller takes the pooled path, which waits), no checkpoint (the pooled connections do them) and no
    fsync at commit (WAL with synchronous=NORMAL, the setting of every connection of the app).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._usable = True

    @classmethod
    def for_database(cls, db: Database) -> _SqliteClaims | None:
        url = db.engine.url
        if not db.is_sqlite or url.query or url.database in (None, "", ":memory:"):
            return None
        claims = cls(str(url.database))
        db.on_close(claims.close)
        return claims

    def insert(self, rows: list[dict[str, Any]]) -> int | None:
        """How many rows were new; None when it cannot be told without waiting (use the pooled path)."""
        if not self._usable:
            return None
        statement = _INSERT.format(rows=", ".join(["(?, ?, ?)"] * len(rows)))
        received = _sqlite_time(datetime.now(UTC))
        params = [value for row in rows for value in (row["platform"], row["event_id"], received)]
        try:
            cursor = self._connect().execute(statement, params)
        except sqlite3.Error as exc:
            log.debug("claim on the event loop's thread not possible (%s): pooled connection", exc)
            return None
        return cursor.rowcount

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
            try:
                self._configure(connection)
            except sqlite3.Error:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _configure(self, connection: sqlite3.Connection) -> None:
        mode = str(connection.execute("PRAGMA journal_mode").fetchone()[0])
        if mode.lower() != "wal":  # every commit would fsync: stay off the event loop's thread
            self._usable = False
            raise sqlite3.OperationalError(f"journal mode {mode}")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA wal_autocheckpoint=0")


def _sqlite_time(moment: datetime) -> str:
    """`moment` as SQLAlchemy stores a DateTime in SQLite (text), so expiry compares it correctly."""
    process = _received_at_processor()
    return str(process(moment) if process is not None else moment)


@functools.cache
def _received_at_processor() -> Callable[[Any], Any] | None:
    """Looked up once: every claim on SQLite needs it before the reply's first post."""
    column = ProcessedEventRow.__table__.c.received_at
    return column.type.dialect_impl(_SQLITE).bind_processor(_SQLITE)
