"""De-duplication of platform events by their id, in the database (survives restarts and replicas)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from core.storage.database import Database
from core.storage.models import ProcessedEventRow


class ProcessedEvents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen; False for every redelivery."""
        try:
            async with self._db.transaction() as session:
                session.add(ProcessedEventRow(platform=platform, event_id=event_id))
        except IntegrityError:
            return False
        return True

    async def forget_before(self, moment: datetime) -> int:
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(ProcessedEventRow).where(ProcessedEventRow.received_at < moment)
            )
            return int(getattr(result, "rowcount", 0) or 0)
