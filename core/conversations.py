"""Conversations and their messages: one row per message, history read from the newest end."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Insert, Select, Update, bindparam, func, insert, select, update
from sqlalchemy.sql.dml import ReturningInsert

from core.storage.database import Database, Prepared, insert_ignoring_duplicates
from core.storage.models import ConversationRow, MessageRow, utcnow
from core.types import ConversationKey

# Statuses whose content belongs in the model's context.
USER_CONTEXT_STATUSES = ("complete",)
ASSISTANT_CONTEXT_STATUSES = ("complete", "cut", "filtered", "interrupted", "timeout", "stopped")
HISTORY_BATCH = 64


@dataclass(frozen=True, slots=True)
class HistoryItem:
    id: int
    role: str
    content: str  # as sent to the model (a user's name prefix included)
    token_count: int
    token_encoding: str


@dataclass(frozen=True, slots=True)
class Opened:
    conversation_id: int
    history_start: int
    lease_taken: bool
    message_id: int | None  # the message inserted with the lease, if any
    # The newest batch of history before that message, when asked for: `history(first=...)`.
    history: Sequence[HistoryItem] | None = None


# Statements built once (see core.storage.database.Prepared): every reply runs them.


@functools.cache
def _conversation_ids() -> Select[int, int]:
    return select(ConversationRow.id, ConversationRow.history_start_id).where(
        ConversationRow.platform == bindparam("platform"),
        ConversationRow.workspace == bindparam("workspace"),
        ConversationRow.channel == bindparam("channel"),
        ConversationRow.thread == bindparam("thread"),
    )


@functools.cache
def _conversation() -> Update:
    """The conversation's row; the SET columns come with the values."""
    return update(ConversationRow).where(ConversationRow.id == bindparam("conversation"))


@functools.cache
def _new_conversation(sqlite_dialect: bool) -> ReturningInsert[int, int]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: no row back when another writer inserted it first."""
    return insert_ignoring_duplicates(sqlite_dialect, ConversationRow).returning(
        ConversationRow.id, ConversationRow.history_start_id
    )


@functools.cache
def _message() -> Update:
    """The message's row; the SET columns come with the values."""
    return update(MessageRow).where(MessageRow.id == bindparam("message"))


@functools.cache
def _new_message() -> Insert:
    return insert(MessageRow).returning(MessageRow.id)


@functools.cache
def _history_batch() -> Select[int, str, str, int, str]:
    eligible = ((MessageRow.role == "user") & MessageRow.status.in_(USER_CONTEXT_STATUSES)) | (
        (MessageRow.role == "assistant") & MessageRow.status.in_(ASSISTANT_CONTEXT_STATUSES)
    )
    return (
        select(
            MessageRow.id,
            MessageRow.role,
            MessageRow.content,
            MessageRow.token_count,
            MessageRow.token_encoding,
        )
        .where(
            MessageRow.conversation_id == bindparam("conversation"),
            MessageRow.id > bindparam("start_after"),
            MessageRow.id < bindparam("before"),
            eligible,
            MessageRow.content != "",
        )
        .order_by(MessageRow.id.desc())
        .limit(HISTORY_BATCH)
    )


def _insert_message(connection: Connection, conversation_id: int, fields: Mapping[str, Any]) -> int:
    result = connection.execute(_new_message(), {"conversation_id": conversation_id, **fields})
    return int(result.scalar_one())


def conversation_ids(connection: Connection, sqlite_dialect: bool, key: ConversationKey) -> tuple[int, int]:
    """The conversation's id and history start, inserting it when new (another replica may insert it
    at the same moment: then its row is read)."""
    values = {
        "platform": key.platform,
        "workspace": key.workspace,
        "channel": key.channel,
        "thread": key.thread,
    }
    found = connection.execute(_conversation_ids(), values).first()
    if found is None:
        found = connection.execute(_new_conversation(sqlite_dialect), values).first()
    if found is None:  # the other writer's row
        found = connection.execute(_conversation_ids(), values).one()
    return found[0], found[1]


def set_conversation_columns(connection: Connection, conversation_id: int, **columns: Any) -> None:
    connection.execute(_conversation(), {"conversation": conversation_id, **columns})


def _open(
    connection: Connection,
    sqlite_dialect: bool,
    key: ConversationKey,
    take_lease: Callable[..., Prepared] | None,
    message: Mapping[str, Any] | None,
    with_history: bool,
) -> Opened:
    conversation_id, history_start = conversation_ids(connection, sqlite_dialect, key)
    now = utcnow()
    taken = False
    if take_lease is not None:
        taken = bool(take_lease(conversation_id, last_active_at=now).execute(connection).rowcount)
    if not taken:
        set_conversation_columns(connection, conversation_id, last_active_at=now)
    message_id = None
    history = None
    if taken and message is not None:
        message_id = _insert_message(connection, conversation_id, message)
        if with_history:
            values = {"conversation": conversation_id, "start_after": history_start, "before": message_id}
            history = _history_batch_items(connection, values)
    return Opened(conversation_id, history_start, taken, message_id, history)


def _update_message(
    connection: Connection, message_id: int, fields: Mapping[str, Any], also: Prepared | None
) -> None:
    connection.execute(_message(), {"message": message_id, **fields})
    if also is not None:
        also.execute(connection)


def _history_batch_items(connection: Connection, values: Mapping[str, Any]) -> list[HistoryItem]:
    return [HistoryItem(*row) for row in connection.execute(_history_batch(), values)]


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def open(
        self,
        key: ConversationKey,
        take_lease: Callable[..., Prepared] | None = None,
        message: Mapping[str, Any] | None = None,
        *,
        with_history: bool = False,
    ) -> Opened:
        """Open the conversation (created when new) in one transaction with, optionally, the lease
        statement `take_lease(id, **columns)` and, if that took the lease, the insertion of `message`
        and (`with_history`) the reading of the newest batch of history before it.
        """
        return await self._db.write(
            functools.partial(
                _open,
                sqlite_dialect=self._db.is_sqlite,
                key=key,
                take_lease=take_lease,
                message=message,
                with_history=with_history,
            )
        )

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
        return await self._db.write(
            functools.partial(_insert_message, conversation_id=conversation_id, fields=fields)
        )

    async def update_message(self, message_id: int, *, also: Prepared | None = None, **fields: Any) -> None:
        """Update the message's columns; `also`: a statement to run in the same transaction."""
        await self._db.write(
            functools.partial(_update_message, message_id=message_id, fields=fields, also=also)
        )

    async def history(
        self,
        conversation_id: int,
        start_after: int,
        before_id: int,
        first: Sequence[HistoryItem] | None = None,
    ) -> AsyncIterator[Sequence[HistoryItem]]:
        """Batches of context-eligible messages, newest first; stop iterating once the budget is full.

        `first`: the newest batch, read already (`Opened.history`).
        """
        values = {"conversation": conversation_id, "start_after": start_after, "before": before_id}
        while True:
            if first is not None:
                batch, first = first, None
            else:
                batch = await self._db.read(functools.partial(_history_batch_items, values=values))
            if not batch:
                return
            yield batch
            if len(batch) < HISTORY_BATCH:
                return
            values["before"] = batch[-1].id

    async def unfinished_replies(self, older_than: datetime | None = None) -> list[MessageRow]:
        async with self._db.session() as session:
            query = select(MessageRow).where(MessageRow.status == "streaming")
            if older_than is not None:
                query = query.where(MessageRow.created_at < older_than)
            return list((await session.scalars(query)).all())
