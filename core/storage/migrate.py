"""Schema upgrades through Alembic, callable from inside the running event loop.

Alembic (with Mako and Pygments behind it) costs ~11 MiB of resident memory, so it is imported only
when an upgrade is needed: whether the schema is at `HEAD_REVISION` is one plain SQL query. `threadline
run` goes further and upgrades in a child process (`python -m core.storage.migrate`), so the
long-running service never holds Alembic at all.
"""

from __future__ import annotations

import asyncio
import os
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from core.storage.database import Database

if TYPE_CHECKING:
    from alembic.config import Config

# The newest file in migrations/versions. A new migration must change this too: the test
# tests/test_migrations.py::test_head_revision_constant_is_alembics_head fails until it does.
HEAD_REVISION = "0001"

VERSION_TABLE = "alembic_version"  # Alembic's default, which migrations/env.py keeps

# Any fixed number: replicas starting together on PostgreSQL upgrade one after the other.
_MIGRATION_LOCK_ID = 7_246_113


class MultipleHeads(RuntimeError):
    """The version table names several revisions (branches): only Alembic can tell what to do."""


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    script_location = Path(str(resources.files("migrations")))
    config = Config()
    config.set_main_option("script_location", str(script_location))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _downgrade(connection: Connection, config: Config, revision: str) -> None:
    from alembic import command

    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def _versions(connection: Connection) -> list[str]:
    if not inspect(connection).has_table(VERSION_TABLE):
        return []
    return [row[0] for row in connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))]


async def upgrade(db: Database, revision: str = "head") -> None:
    """Alembic's upgrade, always (`threadline db upgrade`, tests); see `upgrade_if_needed`."""
    config = alembic_config(db.url)
    async with db.engine.begin() as connection:
        await connection.run_sync(_upgrade, config, revision)


async def downgrade(db: Database, revision: str) -> None:
    config = alembic_config(db.url)
    async with db.engine.begin() as connection:
        await connection.run_sync(_downgrade, config, revision)


async def current_revision(db: Database) -> str | None:
    """The schema's revision, None when empty; read with plain SQL, without importing Alembic."""
    async with db.engine.connect() as connection:
        versions = await connection.run_sync(_versions)
    if len(versions) > 1:
        raise MultipleHeads(f"the database has several schema revisions: {', '.join(sorted(versions))}")
    return versions[0] if versions else None


async def at_head(db: Database) -> bool:
    """Whether the schema is exactly this program's newest revision (then no upgrade is needed)."""
    try:
        return await current_revision(db) == HEAD_REVISION
    except MultipleHeads:
        return False


async def upgrade_if_needed(db: Database) -> bool:
    """Upgrade in this process when the schema is not at head; whether an upgrade ran."""
    if await at_head(db):
        return False
    await upgrade(db)
    return True


def head_revision() -> str | None:
    """The head according to the migration scripts themselves (imports Alembic); see HEAD_REVISION."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


# --------------------------------------------------------------------------- child process

URL_ENV = "THREADLINE_MIGRATE_DATABASE_URL"


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (SQLAlchemy adds SQL)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


async def _upgrade_url(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.aclose()


async def upgrade_in_child(url: str) -> str | None:
    """Upgrade the schema at `url` in a child Python process, so this one never imports Alembic.

    None on success, else the reason in one line. The PostgreSQL advisory lock still serialises
    replicas starting together: the child takes it just as an in-process upgrade would.
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core.storage.migrate",
        env={**os.environ, URL_ENV: url},  # not in argv: the URL may hold a password
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    if child.returncode == 0:
        return None
    reason = out.decode(errors="replace").strip().splitlines()
    return reason[-1] if reason else f"the upgrade process exited with status {child.returncode}"


def main() -> int:
    """`python -m core.storage.migrate`: upgrade the schema at $THREADLINE_MIGRATE_DATABASE_URL.

    Exit status 0 when done; otherwise 1 and the reason in one line on stdout, for the parent to
    report (`threadline db upgrade` runs the same upgrade in process and shows a traceback).
    """
    url = os.environ.get(URL_ENV)
    if not url:
        print(f"{URL_ENV} is not set", flush=True)
        return 1
    try:
        asyncio.run(_upgrade_url(url))
    except KeyboardInterrupt:  # Ctrl-C reaches the parent too, which reports it
        return 130
    except Exception as exc:
        print(one_line(exc), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
