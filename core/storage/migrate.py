"""Schema upgrades through Alembic, callable from inside the running event loop."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from core.storage.database import Database

# Any fixed number: replicas starting together on PostgreSQL upgrade one after the other.
_MIGRATION_LOCK_ID = 7_246_113


def alembic_config(url: str | None = None) -> Config:
    script_location = Path(str(resources.files("migrations")))
    config = Config()
    config.set_main_option("script_location", str(script_location))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _downgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(db: Database, revision: str = "head") -> None:
    config = alembic_config(db.url)
    async with db.engine.begin() as connection:
        await connection.run_sync(_upgrade, config, revision)


async def downgrade(db: Database, revision: str) -> None:
    config = alembic_config(db.url)
    async with db.engine.begin() as connection:
        await connection.run_sync(_downgrade, config, revision)


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as connection:
        return await connection.run_sync(_current)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
