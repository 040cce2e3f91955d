"""Database.write and Database.read: synchronous Core work in one transaction, on either database."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, func, insert, select

from core.app import Core
from core.storage.models import PersonaRow


def _add(connection: Connection, name: str) -> int:
    connection.execute(insert(PersonaRow).values(name=name, system_prompt="You help.", model="gpt-4o-mini"))
    return int(connection.execute(select(func.count()).select_from(PersonaRow)).scalar_one())


def _add_then_fail(connection: Connection, name: str) -> None:
    _add(connection, name)
    raise RuntimeError("the work failed after its insert")


def _names(connection: Connection) -> list[str]:
    return list(connection.execute(select(PersonaRow.name).order_by(PersonaRow.name)).scalars())


async def test_work_is_committed_or_rolled_back_as_a_whole(core: Core) -> None:
    db = core.db
    before = await db.read(_names)
    counted = await db.write(lambda connection: _add(connection, "zz-first"))
    assert counted == len(before) + 1  # the work sees its own insert
    with pytest.raises(RuntimeError, match="failed after its insert"):
        await db.write(lambda connection: _add_then_fail(connection, "zz-second"))
    names = await db.read(_names)
    assert "zz-first" in names
    assert "zz-second" not in names  # rolled back with the error
    assert len(names) == len(before) + 1
