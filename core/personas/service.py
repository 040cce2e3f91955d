"""Stored personas and which one a conversation uses.

Resolution order: thread override > channel setting > workspace default > built-in default.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    Row,
    Select,
    bindparam,
    case,
    delete,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.personas.builtin import DEFAULT_PERSONA_NAME, builtin_personas
from core.personas.model import Persona
from core.storage.database import Database
from core.storage.models import ChannelSettingRow, ConversationRow, PersonaRow
from core.types import ConversationKey

WORKSPACE_SCOPE = ""  # channel_settings.channel value for workspace-wide settings


class PersonaSource(StrEnum):
    THREAD = "thread"
    CHANNEL = "channel"
    WORKSPACE = "workspace"
    DEFAULT = "default"


_SOURCE_BY_RANK = {
    0: PersonaSource.THREAD,
    1: PersonaSource.CHANNEL,
    2: PersonaSource.WORKSPACE,
    3: PersonaSource.DEFAULT,
}


class UnknownPersona(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"There is no persona named '{name}'.")
        self.name = name


class PersonaExists(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"A persona named '{name}' already exists.")
        self.name = name


class DefaultPersonaRequired(ValueError):
    def __init__(self) -> None:
        super().__init__(f"The default persona '{DEFAULT_PERSONA_NAME}' cannot be deleted; edit it instead.")


@dataclass(frozen=True, slots=True)
class ResolvedPersona:
    persona: Persona
    source: PersonaSource


_PERSONA_COLUMNS = tuple(Persona.model_fields)


def _columns(source: object) -> dict[str, Any]:
    """The persona's columns as held by a Persona, a PersonaRow or a result row."""
    return {name: getattr(source, name) for name in _PERSONA_COLUMNS}


def row_to_persona(row: object) -> Persona:
    """From a PersonaRow or a result row with the persona's columns."""
    return Persona.model_validate(_columns(row))


def _apply(row: PersonaRow, persona: Persona) -> None:
    for name, value in _columns(persona).items():
        setattr(row, name, value)


class PersonaService:
    def __init__(self, db: Database, default_model: str) -> None:
        self._db = db
        self._default_model = default_model

    async def seed_builtins(self) -> None:
        """Insert the built-in personas that are missing (a fresh database gets all of them).

        Replicas starting together all seed: rows another one inserted first are skipped.
        """
        rows = [{"builtin": True, **_columns(persona)} for persona in builtin_personas(self._default_model)]
        async with self._db.transaction() as session:
            await session.execute(self._db.insert_ignoring_duplicates(PersonaRow).values(rows))

    async def list(self) -> list[Persona]:
        async with self._db.session() as session:
            rows = (await session.scalars(select(PersonaRow).order_by(PersonaRow.name))).all()
            return [row_to_persona(row) for row in rows]

    async def get(self, name: str) -> Persona | None:
        async with self._db.session() as session:
            row = await self._row(session, name)
            return row_to_persona(row) if row else None

    async def create(self, persona: Persona) -> Persona:
        try:
            async with self._db.transaction() as session:
                row = PersonaRow(builtin=False)
                _apply(row, persona)
                session.add(row)
        except IntegrityError:
            raise PersonaExists(persona.name) from None
        return persona

    async def upsert(self, persona: Persona) -> bool:
        """Create or replace by name (YAML import); returns True when it was created."""
        async with self._db.transaction() as session:
            row = await self._row(session, persona.name)
            created = row is None
            if row is None:
                row = PersonaRow(builtin=False)
                session.add(row)
            _apply(row, persona)
            return created

    async def update(self, name: str, persona: Persona) -> Persona:
        try:
            async with self._db.transaction() as session:
                row = await self._row(session, name)
                if row is None:
                    raise UnknownPersona(name)
                if name == DEFAULT_PERSONA_NAME and persona.name != name:
                    raise DefaultPersonaRequired()
                _apply(row, persona)
        except IntegrityError:
            raise PersonaExists(persona.name) from None
        return persona

    async def delete(self, name: str) -> None:
        if name == DEFAULT_PERSONA_NAME:
            raise DefaultPersonaRequired()
        async with self._db.transaction() as session:
            row = await self._row(session, name)
            if row is None:
                raise UnknownPersona(name)
            # Explicit, so that SQLite databases without foreign-key enforcement fall back too.
            await session.execute(
                update(ChannelSettingRow)
                .where(ChannelSettingRow.persona_id == row.id)
                .values(persona_id=None)
            )
            await session.execute(
                update(ConversationRow).where(ConversationRow.persona_id == row.id).values(persona_id=None)
            )
            await session.execute(delete(PersonaRow).where(PersonaRow.id == row.id))

    async def resolve(self, key: ConversationKey) -> ResolvedPersona:
        """One query: every candidate of the resolution order, the first one wins."""
        params = {
            "platform": key.platform,
            "workspace": key.workspace,
            "channel": key.channel,
            "thread": key.thread,
        }
        found = await self._db.read(functools.partial(_resolution_row, params=params))
        if found is None:  # the default was deleted from the database by hand: the built-in one
            return ResolvedPersona(builtin_personas(self._default_model)[0], PersonaSource.DEFAULT)
        return ResolvedPersona(row_to_persona(found), _SOURCE_BY_RANK[found.rank])

    async def set_channel(
        self, platform: str, workspace: str, channel: str, name: str | None
    ) -> Persona | None:
        return await self._set_scope(platform, workspace, channel, name)

    async def set_workspace_default(self, platform: str, workspace: str, name: str | None) -> Persona | None:
        return await self._set_scope(platform, workspace, WORKSPACE_SCOPE, name)

    async def set_thread(self, key: ConversationKey, name: str | None) -> Persona | None:
        async with self._db.transaction() as session:
            row = await self._require(session, name) if name else None
            persona_id = row.id if row else None
            connection = await session.connection()
            await connection.run_sync(_set_thread_persona, self._db.is_sqlite, key, persona_id)
            return row_to_persona(row) if row else None

    async def _set_scope(
        self, platform: str, workspace: str, channel: str, name: str | None
    ) -> Persona | None:
        from core.channels import get_or_create_setting

        async with self._db.transaction() as session:
            row = await self._require(session, name) if name else None
            setting = await get_or_create_setting(session, platform, workspace, channel)
            setting.persona_id = row.id if row else None
            return row_to_persona(row) if row else None

    async def _require(self, session: AsyncSession, name: str) -> PersonaRow:
        row = await self._row(session, name)
        if row is None:
            raise UnknownPersona(name)
        return row

    @staticmethod
    async def _row(session: AsyncSession, name: str) -> PersonaRow | None:
        return await session.scalar(select(PersonaRow).where(PersonaRow.name == name))


def _set_thread_persona(
    connection: Connection, sqlite_dialect: bool, key: ConversationKey, persona_id: int | None
) -> None:
    from core.conversations import conversation_ids, set_conversation_columns

    conversation_id, _ = conversation_ids(connection, sqlite_dialect, key)
    set_conversation_columns(connection, conversation_id, persona_id=persona_id)


def _resolution_row(connection: Connection, params: dict[str, str]) -> Row[PersonaRow, int] | None:
    """Columns, not ORM objects: it runs before every reply."""
    return connection.execute(_resolution_query(), params).first()


@functools.cache
def _resolution_query() -> Select[PersonaRow, int]:
    """Built once (it sits before every reply): thread, channel, workspace and default candidates."""
    platform: BindParameter[str] = bindparam("platform")
    workspace: BindParameter[str] = bindparam("workspace")
    channel: BindParameter[str] = bindparam("channel")
    thread: BindParameter[str] = bindparam("thread")
    in_thread = select(literal(0).label("rank"), ConversationRow.persona_id.label("persona_id")).where(
        ConversationRow.platform == platform,
        ConversationRow.workspace == workspace,
        ConversationRow.channel == channel,
        ConversationRow.thread == thread,
        ConversationRow.persona_id.is_not(None),
    )
    scoped = select(
        case((ChannelSettingRow.channel == WORKSPACE_SCOPE, 2), else_=1).label("rank"),
        ChannelSettingRow.persona_id.label("persona_id"),
    ).where(
        ChannelSettingRow.platform == platform,
        ChannelSettingRow.workspace == workspace,
        or_(ChannelSettingRow.channel == channel, ChannelSettingRow.channel == WORKSPACE_SCOPE),
        ChannelSettingRow.persona_id.is_not(None),
    )
    default = select(literal(3).label("rank"), PersonaRow.id.label("persona_id")).where(
        PersonaRow.name == DEFAULT_PERSONA_NAME
    )
    candidates = union_all(in_thread, scoped, default).subquery()
    return (
        select(PersonaRow, candidates.c.rank)
        .join(candidates, candidates.c.persona_id == PersonaRow.id)
        .order_by(candidates.c.rank)
        .limit(1)
    )
