"""Per-channel behaviour settings (the persona choice lives in `core.personas.service`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.database import Database
from core.storage.models import ChannelSettingRow
from core.storage.rows import get_or_create

_FLAGS = ("follow_up_in_threads", "reply_in_thread", "allow_bots")


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    follow_up_in_threads: bool = True
    reply_in_thread: bool = True
    allow_bots: bool = False


async def get_or_create_setting(
    session: AsyncSession, platform: str, workspace: str, channel: str
) -> ChannelSettingRow:
    defaults = ChannelSettings()
    return await get_or_create(
        session,
        ChannelSettingRow,
        {flag: getattr(defaults, flag) for flag in _FLAGS},
        platform=platform,
        workspace=workspace,
        channel=channel,
    )


class ChannelSettingsService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, platform: str, workspace: str, channel: str) -> ChannelSettings:
        async with self._db.session() as session:
            row = await session.scalar(
                select(ChannelSettingRow).where(
                    ChannelSettingRow.platform == platform,
                    ChannelSettingRow.workspace == workspace,
                    ChannelSettingRow.channel == channel,
                )
            )
        if row is None:
            return ChannelSettings()
        return ChannelSettings(**{flag: getattr(row, flag) for flag in _FLAGS})

    async def update(self, platform: str, workspace: str, channel: str, **changes: Any) -> ChannelSettings:
        unknown = set(changes) - set(_FLAGS)
        if unknown:
            raise ValueError(f"unknown channel settings: {', '.join(sorted(unknown))}")
        async with self._db.transaction() as session:
            row = await get_or_create_setting(session, platform, workspace, channel)
            for flag, value in changes.items():
                setattr(row, flag, bool(value))
            return ChannelSettings(**{flag: getattr(row, flag) for flag in _FLAGS})
