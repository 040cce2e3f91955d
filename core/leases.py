"""A conversation lease: one replica at a time answers a conversation.

A row update takes the lease (free, expired, or ours) and a background task renews it while the
turn streams. Unlike a PostgreSQL advisory lock it holds no database connection for the length of
a stream, so 500 concurrent replies do not need 500 connections; a crashed replica's lease simply
expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Update, bindparam, or_, update

from core.storage.database import Database, Prepared
from core.storage.models import ConversationRow

LEASE_SECONDS = 60.0
POLL_INITIAL = 0.05
POLL_MAX = 1.0


class LeaseTimeout(TimeoutError):
    pass


@functools.cache
def _ours() -> Update:
    """The lease's row while `owner` holds it; the SET columns come with the values."""
    return update(ConversationRow).where(
        ConversationRow.id == bindparam("conversation"), ConversationRow.lease_owner == bindparam("owner")
    )


@functools.cache
def _take() -> Update:
    """The lease's row while it is free, expired or already `owner`'s."""
    return update(ConversationRow).where(
        ConversationRow.id == bindparam("conversation"),
        or_(
            ConversationRow.lease_owner.is_(None),
            ConversationRow.lease_expires_at < bindparam("now"),
            ConversationRow.lease_owner == bindparam("owner"),
        ),
    )


@dataclass(slots=True)
class HeldLease:
    conversation_id: int
    owner: str
    released: bool = False

    def release(self) -> Prepared:
        """The statement that frees the lease if it is still ours; once it committed, set `released`."""
        return Prepared(_ours(), self._values(lease_owner=None, lease_expires_at=None))

    def renew(self, expires_at: datetime) -> Prepared:
        """Extend the lease while it is still ours: never take it back once released."""
        return Prepared(_ours(), self._values(lease_expires_at=expires_at))

    def _values(self, **columns: Any) -> dict[str, Any]:
        return {"conversation": self.conversation_id, "owner": self.owner, **columns}


class ConversationLeases:
    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float = LEASE_SECONDS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._lease = lease_seconds
        self._now = now

    @staticmethod
    def new_owner() -> str:
        return secrets.token_hex(8)

    def take(self, conversation_id: int, owner: str, **columns: Any) -> Prepared:
        """The statement that takes the lease when it is free, expired or already `owner`'s, and sets
        the other `columns` of the conversation with it.

        Run it in a transaction of your own to save one (its rowcount says whether it worked).
        """
        now = self._now()
        expires = now + timedelta(seconds=self._lease)
        values = {"lease_owner": owner, "lease_expires_at": expires, **columns}
        return Prepared(_take(), {"conversation": conversation_id, "owner": owner, "now": now, **values})

    @asynccontextmanager
    async def hold(
        self, conversation_id: int, wait: float = 600.0, *, owner: str | None = None, taken: bool = False
    ) -> AsyncIterator[HeldLease]:
        """Hold the lease while the block runs; `taken`: `owner` already took it with `take()`.

        The block may free it in a transaction of its own (`HeldLease.release`), saving one.
        """
        held = HeldLease(conversation_id, owner or self.new_owner())
        if not taken:
            await self._acquire(conversation_id, held.owner, wait)
        renewer = asyncio.create_task(self._renew(held))
        try:
            yield held
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not held.released:
                async with self._db.engine.begin() as connection:
                    await held.release().run(connection)

    async def _try(self, conversation_id: int, owner: str) -> bool:
        async with self._db.engine.begin() as connection:
            result = await self.take(conversation_id, owner).run(connection)
            return bool(result.rowcount)

    async def _acquire(self, conversation_id: int, owner: str, wait: float) -> None:
        delay = POLL_INITIAL
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not await self._try(conversation_id, owner):
            if loop.time() + delay > deadline:
                raise LeaseTimeout(f"conversation {conversation_id} stayed busy for {wait:.0f} s")
            await asyncio.sleep(delay)
            delay = min(POLL_MAX, delay * 2)

    async def _renew(self, held: HeldLease) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            async with self._db.engine.begin() as connection:
                await held.renew(self._now() + timedelta(seconds=self._lease)).run(connection)

    async def is_held(self, conversation_id: int) -> bool:
        from sqlalchemy import select

        async with self._db.session() as session:
            row = await session.execute(
                select(ConversationRow.lease_owner, ConversationRow.lease_expires_at).where(
                    ConversationRow.id == conversation_id
                )
            )
            owner, expires = row.one()
        if owner is None or expires is None:
            return False
        if expires.tzinfo is None:  # SQLite returns naive datetimes
            expires = expires.replace(tzinfo=UTC)
        return bool(expires >= self._now())
