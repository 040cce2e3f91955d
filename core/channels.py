"""Per-channel behaviour settings (the persona choice lives in `core.personas.service`).

Messages read their channel's settings before anything is posted, so the settings of a workspace are
read together (one query for all its channels) and kept in memory for `SETTINGS_TTL` seconds; a
snapshot up to a minute old still answers a message while it is refreshed in the background. A
change made through this process (`update`) is seen at once; a change made by another replica sharing
the database is seen here within the TTL, or by the second message after it once the workspace was
quiet for longer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.database import Database
from core.storage.models import ChannelSettingRow
from core.storage.rows import get_or_create

SETTINGS_TTL = 5.0
STALE_GRACE = 55.0  # seconds past the TTL a snapshot may still answer once while it is refreshed
REFRESH_DELAY = 0.05  # seconds between answering from an old snapshot and re-reading it
CACHED_WORKSPACES = 1024

_Workspace = tuple[str, str]  # (platform, workspace)


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    follow_up_in_threads: bool = True
    reply_in_thread: bool = True
    allow_bots: bool = False


_FLAGS = tuple(field.name for field in dataclasses.fields(ChannelSettings))

_DEFAULTS = ChannelSettings()
_Snapshot = dict[str, ChannelSettings]  # by channel; a channel without a row has the defaults


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
    def __init__(
        self,
        db: Database,
        *,
        ttl: float = SETTINGS_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl = ttl
        self._clock = clock
        self._cached: OrderedDict[_Workspace, tuple[_Snapshot, float]] = OrderedDict()
        self._reading: dict[_Workspace, asyncio.Task[_Snapshot]] = {}
        self._refreshing: set[_Workspace] = set()  # re-reads scheduled (REFRESH_DELAY)
        self._updates = 0  # a read that overlapped an update must not be kept

    async def get(self, platform: str, workspace: str, channel: str) -> ChannelSettings:
        snapshot = await self._snapshot((platform, workspace))
        return snapshot.get(channel, _DEFAULTS)

    async def update(self, platform: str, workspace: str, channel: str, **changes: Any) -> ChannelSettings:
        unknown = set(changes) - set(_FLAGS)
        if unknown:
            raise ValueError(f"unknown channel settings: {', '.join(sorted(unknown))}")
        try:
            async with self._db.transaction() as session:
                row = await get_or_create_setting(session, platform, workspace, channel)
                for flag, value in changes.items():
                    setattr(row, flag, bool(value))
                return _settings(row)
        finally:
            self._updates += 1
            self._cached.pop((platform, workspace), None)
            self._reading.pop((platform, workspace), None)  # a read started before may be stale

    async def _snapshot(self, workspace: _Workspace) -> _Snapshot:
        cached = self._cached.get(workspace)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        if cached is not None and cached[1] + STALE_GRACE > now:
            # Slightly old: answer with it now and refresh it for the next message, a moment later
            # so that the refresh does not compete with this message's first reply.
            if workspace not in self._reading and workspace not in self._refreshing:
                self._refreshing.add(workspace)
                asyncio.get_running_loop().call_later(REFRESH_DELAY, self._refresh, workspace)
            return cached[0]
        reading = self._reading.get(workspace)
        if reading is None:
            reading = asyncio.create_task(self._read(workspace))
            self._reading[workspace] = reading
        return await asyncio.shield(reading)

    def _refresh(self, workspace: _Workspace) -> None:
        self._refreshing.discard(workspace)
        if workspace not in self._reading:
            self._reading[workspace] = asyncio.create_task(self._read(workspace))

    async def _read(self, workspace: _Workspace) -> _Snapshot:
        """One workspace's settings from the database, kept unless an update ran meanwhile."""
        updates = self._updates
        platform, workspace_id = workspace
        try:
            # Columns, not ORM objects: this runs before the first reply after a quiet spell.
            rows = await self._db.read(
                functools.partial(_workspace_rows, values={"platform": platform, "workspace": workspace_id})
            )
            snapshot = {channel: ChannelSettings(*flags) for channel, *flags in rows}
        finally:
            if self._reading.get(workspace) is asyncio.current_task():
                del self._reading[workspace]
        if updates == self._updates:
            self._keep(workspace, snapshot)
        return snapshot

    def _keep(self, workspace: _Workspace, snapshot: _Snapshot) -> None:
        self._cached[workspace] = (snapshot, self._clock() + self._ttl)
        self._cached.move_to_end(workspace)
        while len(self._cached) > CACHED_WORKSPACES:
            self._cached.popitem(last=False)


@functools.cache
def _workspace_settings() -> Select[str, bool, bool, bool]:
    """Every channel row of one workspace: the channel, then the flags in `_FLAGS` order."""
    return select(ChannelSettingRow.channel, *(getattr(ChannelSettingRow, flag) for flag in _FLAGS)).where(
        ChannelSettingRow.platform == bindparam("platform"),
        ChannelSettingRow.workspace == bindparam("workspace"),
    )


def _workspace_rows(connection: Connection, values: dict[str, str]) -> Sequence[Row[str, bool, bool, bool]]:
    return connection.execute(_workspace_settings(), values).all()


def _settings(row: ChannelSettingRow) -> ChannelSettings:
    return ChannelSettings(**{flag: getattr(row, flag) for flag in _FLAGS})
