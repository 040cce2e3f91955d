"""A conversation lease: one replica at a time answers a conversation.

A row update takes the lease (free, expired, or ours) and a background task renews it while the
turn streams. Unlike a PostgreSQL advisory lock it holds no database connection for the length of
a stream, so 500 concurrent replies do not need 500 connections; a crashed replica's lease simply
expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Update, or_, update

from core.storage.database import Database
from core.storage.models import ConversationRow

LEASE_SECONDS = 60.0
POLL_INITIAL = 0.05
POLL_MAX = 1.0


class LeaseTimeout(TimeoutError):
    pass


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

    def take(self, conversation_id: int, owner: str) -> Update:
        """The statement that takes the lease when it is free, expired or already `owner`'s.

        Run it in a transaction of your own to save one (its rowcount says whether it worked).
        """
        now = self._now()
        return (
            update(ConversationRow)
            .where(
                ConversationRow.id == conversation_id,
                or_(
                    ConversationRow.lease_owner.is_(None),
                    ConversationRow.lease_expires_at < now,
                    ConversationRow.lease_owner == owner,
                ),
            )
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=self._lease))
        )

    @asynccontextmanager
    async def hold(
        self, conversation_id: int, wait: float = 600.0, *, owner: str | None = None, taken: bool = False
    ) -> AsyncIterator[None]:
        """Hold the lease while the block runs; `taken`: `owner` already took it with `take()`."""
        owner = owner or self.new_owner()
        if not taken:
            await self._acquire(conversation_id, owner, wait)
        renewer = asyncio.create_task(self._renew(conversation_id, owner))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await self._release(conversation_id, owner)

    async def _try(self, conversation_id: int, owner: str) -> bool:
        async with self._db.transaction() as session:
            result = await session.execute(self.take(conversation_id, owner))
            return bool(getattr(result, "rowcount", 0))

    async def _acquire(self, conversation_id: int, owner: str, wait: float) -> None:
        delay = POLL_INITIAL
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not await self._try(conversation_id, owner):
            if loop.time() + delay > deadline:
                raise LeaseTimeout(f"conversation {conversation_id} stayed busy for {wait:.0f} s")
            await asyncio.sleep(delay)
            delay = min(POLL_MAX, delay * 2)

    async def _renew(self, conversation_id: int, owner: str) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            await self._try(conversation_id, owner)

    async def _release(self, conversation_id: int, owner: str) -> None:
        async with self._db.transaction() as session:
            await session.execute(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id, ConversationRow.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

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
