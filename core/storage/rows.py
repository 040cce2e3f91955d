"""Row helpers shared by the stores."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.models import Base

RowT = TypeVar("RowT", bound=Base)


async def get_or_create(
    session: AsyncSession, model: type[RowT], defaults: dict[str, Any] | None = None, **key: Any
) -> RowT:
    """The row with these unique `key` columns, inserting it (with `defaults`) when missing.

    Safe against another replica inserting the same row at the same moment: the loser of the
    unique constraint reads the winner's row.
    """
    query = select(model).filter_by(**key)
    row = await session.scalar(query)
    if row is not None:
        return row
    row = model(**key, **(defaults or {}))
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = await session.scalar(query)
        assert existing is not None
        return existing
    return row
