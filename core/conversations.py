"""Conversations and their messages: one row per message, history read from the newest end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Update, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.database import Database
from core.storage.models import ConversationRow, MessageRow, utcnow
from core.storage.rows import get_or_create
from core.types import ConversationKey

# Statuses whose content belongs in the model's context.
USER_CONTEXT_STATUSES = ("complete",)
ASSISTANT_CONTEXT_STATUSES = ("complete", "cut", "filtered", "interrupted", "timeout", "stopped")
HISTORY_BATCH = 64


@dataclass(frozen=True, slots=True)
class Opened:
    conversation_id: int
    history_start: int
    lease_taken: bool
    message_id: int | None  # the message inserted with the lease, if any


@dataclass(frozen=True, slots=True)
class HistoryItem:
    id: int
    role: str
    content: str  # as sent to the model (a user's name prefix included)
    token_count: int
    token_encoding: str


async def get_or_create_conversation(session: AsyncSession, key: ConversationKey) -> ConversationRow:
    return await get_or_create(
        session,
        ConversationRow,
        platform=key.platform,
        workspace=key.workspace,
        channel=key.channel,
        thread=key.thread,
    )


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def open(
        self,
        key: ConversationKey,
        take_lease: Callable[[int], Update] | None = None,
        message: Mapping[str, Any] | None = None,
    ) -> Opened:
        """Open the conversation (created when new) in one transaction with, optionally, the lease
        statement `take_lease(id)` and, if that took the lease, the insertion of `message`."""
        async with self._db.transaction() as session:
            row = await get_or_create_conversation(session, key)
            conversation_id, history_start = row.id, row.history_start_id
            taken = False
            if take_lease is not None:
                # Not evaluated against the loaded row: SQLite hands back naive datetimes.
                result = await session.execute(
                    take_lease(conversation_id).values(last_active_at=utcnow()),
                    execution_options={"synchronize_session": False},
                )
                taken = bool(getattr(result, "rowcount", 0))
            if not taken:
                row.last_active_at = utcnow()
            message_id = None
            if taken and message is not None:
                added = MessageRow(conversation_id=conversation_id, **message)
                session.add(added)
                await session.flush()
                message_id = added.id
            return Opened(conversation_id, history_start, taken, message_id)

    async def exists(self, key: ConversationKey) -> bool:
        async with self._db.session() as session:
            found = await session.scalar(
                select(ConversationRow.id)
                .join(MessageRow, MessageRow.conversation_id == ConversationRow.id)
                .where(
                    ConversationRow.platform == key.platform,
                    ConversationRow.workspace == key.workspace,
                    ConversationRow.channel == key.channel,
                    ConversationRow.thread == key.thread,
                )
                .limit(1)
            )
        return found is not None

    async def reset(self, key: ConversationKey) -> bool:
        """Forget the history (rows stay for usage accounting); True when something was forgotten."""
        async with self._db.transaction() as session:
            row = await session.scalar(
                select(ConversationRow).where(
                    ConversationRow.platform == key.platform,
                    ConversationRow.workspace == key.workspace,
                    ConversationRow.channel == key.channel,
                    ConversationRow.thread == key.thread,
                )
            )
            if row is None:
                return False
            newest = await session.scalar(
                select(func.max(MessageRow.id)).where(MessageRow.conversation_id == row.id)
            )
            if newest is None or newest <= row.history_start_id:
                return False
            row.history_start_id = newest
            return True

    async def add_message(self, conversation_id: int, **fields: Any) -> int:
        async with self._db.transaction() as session:
            row = MessageRow(conversation_id=conversation_id, **fields)
            session.add(row)
            await session.flush()
            return row.id

    async def update_message(self, message_id: int, **fields: Any) -> None:
        async with self._db.transaction() as session:
            await session.execute(update(MessageRow).where(MessageRow.id == message_id).values(**fields))

    async def history(
        self, conversation_id: int, start_after: int, before_id: int
    ) -> AsyncIterator[Sequence[HistoryItem]]:
        """Batches of context-eligible messages, newest first; stop iterating once the budget is full."""
        cursor = before_id
        eligible = ((MessageRow.role == "user") & MessageRow.status.in_(USER_CONTEXT_STATUSES)) | (
            (MessageRow.role == "assistant") & MessageRow.status.in_(ASSISTANT_CONTEXT_STATUSES)
        )
        while True:
            async with self._db.session() as session:
                rows = (
                    await session.execute(
                        select(
                            MessageRow.id,
                            MessageRow.role,
                            MessageRow.content,
                            MessageRow.token_count,
                            MessageRow.token_encoding,
                        )
                        .where(
                            MessageRow.conversation_id == conversation_id,
                            MessageRow.id > start_after,
                            MessageRow.id < cursor,
                            eligible,
                            MessageRow.content != "",
                        )
                        .order_by(MessageRow.id.desc())
                        .limit(HISTORY_BATCH)
                    )
                ).all()
            if not rows:
                return
            yield [HistoryItem(*row) for row in rows]
            if len(rows) < HISTORY_BATCH:
                return
            cursor = rows[-1][0]

    async def unfinished_replies(self, older_than: datetime | None = None) -> list[MessageRow]:
        async with self._db.session() as session:
            query = select(MessageRow).where(MessageRow.status == "streaming")
            if older_than is not None:
                query = query.where(MessageRow.created_at < older_than)
            return list((await session.scalars(query)).all())
