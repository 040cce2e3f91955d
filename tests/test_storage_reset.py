"""Connections go back to the pool without a transaction left open, and without redundant resets."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from core.storage.database import Database


async def test_an_uncommitted_write_is_rolled_back_when_its_connection_returns(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'reset.db'}")
    try:
        async with db.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE notes (body TEXT)"))
        connection = await db.engine.connect()
        # Behind SQLAlchemy's back, so that only the pool's reset can end this transaction.
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("INSERT INTO notes VALUES ('never committed')")
        await connection.close()
        async with db.transaction() as session:  # would wait out the busy timeout on a held write lock
            await session.execute(text("INSERT INTO notes VALUES ('committed')"))
        async with db.session() as session:
            bodies = (await session.execute(text("SELECT body FROM notes"))).scalars().all()
        assert bodies == ["committed"]
    finally:
        await db.aclose()
