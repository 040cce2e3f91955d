"""Conversations are opened per reply; replicas may open the same new one at the same moment."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from core.config import async_database_url
from core.conversations import ConversationStore
from core.storage.database import Database
from core.storage.migrate import upgrade
from core.storage.models import ConversationRow
from core.types import ConversationKey


async def test_replicas_opening_a_new_conversation_together_share_one_row(database_url: str) -> None:
    first = Database(async_database_url(database_url))
    await upgrade(first)
    databases = [first, *(Database(async_database_url(database_url)) for _ in range(3))]
    key = ConversationKey("slack", "T1", "C1", "1700000000.000100")
    try:
        stores = [ConversationStore(db) for db in databases]
        opened = await asyncio.gather(*(store.open(key) for store in stores for _ in range(2)))
        assert len({o.conversation_id for o in opened}) == 1
        assert {o.history_start for o in opened} == {0}
        async with first.session() as session:
            assert await session.scalar(select(func.count()).select_from(ConversationRow)) == 1
        again = await stores[0].open(key)
        assert again.conversation_id == opened[0].conversation_id
        other = await stores[1].open(ConversationKey("slack", "T1", "C1", "1700000000.000200"))
        assert other.conversation_id != again.conversation_id
    finally:
        for db in databases:
            await db.aclose()
