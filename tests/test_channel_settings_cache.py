"""Channel settings are read once per workspace and kept briefly; a change made here applies at once."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event

from core.app import Core
from core.channels import SETTINGS_TTL, STALE_GRACE, ChannelSettings, ChannelSettingsService
from core.storage.database import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _count_reads(db: Database) -> list[str]:
    reads: list[str] = []

    def before_execute(*args: Any) -> None:
        statement = str(args[2])
        if statement.lstrip().upper().startswith("SELECT") and "channel_settings" in statement:
            reads.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before_execute)
    return reads


async def test_a_change_made_here_applies_at_once(core: Core) -> None:
    channels = core.channels
    assert await channels.get("slack", "T1", "C1") == ChannelSettings()
    await channels.update("slack", "T1", "C1", reply_in_thread=False)
    assert await channels.get("slack", "T1", "C1") == ChannelSettings(reply_in_thread=False)
    await channels.update("slack", "T1", "C1", reply_in_thread=True, allow_bots=True)
    assert await channels.get("slack", "T1", "C1") == ChannelSettings(allow_bots=True)


async def test_one_read_serves_every_channel_of_a_workspace_for_the_ttl(core: Core) -> None:
    clock = Clock()
    channels = ChannelSettingsService(core.db, clock=clock)
    await core.channels.update("discord", "G1", "2", allow_bots=True)
    reads = _count_reads(core.db)
    found = await asyncio.gather(*(channels.get("discord", "G1", channel) for channel in ("1", "2", "3")))
    assert found == [ChannelSettings(), ChannelSettings(allow_bots=True), ChannelSettings()]
    assert await channels.get("discord", "G1", "4") == ChannelSettings()
    assert len(reads) == 1
    clock.now += SETTINGS_TTL
    assert await channels.get("discord", "G1", "1") == ChannelSettings()  # answered at once, refreshed
    async with asyncio.timeout(2):
        while len(reads) < 2:
            await asyncio.sleep(0.01)


async def test_each_stored_flag_is_read_back_as_itself(core: Core) -> None:
    """Each combination a channel can hold comes back from the database unchanged, flag by flag."""
    combinations = [
        ChannelSettings(follow_up_in_threads=a, reply_in_thread=b, allow_bots=c)
        for a in (False, True)
        for b in (False, True)
        for c in (False, True)
    ]
    for index, settings in enumerate(combinations):
        await core.channels.update(
            "slack",
            "T9",
            f"C{index}",
            follow_up_in_threads=settings.follow_up_in_threads,
            reply_in_thread=settings.reply_in_thread,
            allow_bots=settings.allow_bots,
        )
    fresh = ChannelSettingsService(core.db)  # nothing cached: one read of the workspace's rows
    found = [await fresh.get("slack", "T9", f"C{index}") for index in range(len(combinations))]
    assert found == combinations


async def test_a_change_by_another_replica_is_seen_within_the_ttl(core: Core) -> None:
    clock = Clock()
    here = ChannelSettingsService(core.db, clock=clock)
    other_db = Database(core.db.url)
    try:
        there = ChannelSettingsService(other_db)
        assert (await here.get("slack", "T1", "C1")).follow_up_in_threads
        await there.update("slack", "T1", "C1", follow_up_in_threads=False)
        clock.now += SETTINGS_TTL - 0.1
        assert (await here.get("slack", "T1", "C1")).follow_up_in_threads
        clock.now += 0.1
        # The first message after the TTL is answered from memory while it is refreshed; the next
        # one sees the change.
        await here.get("slack", "T1", "C1")
        async with asyncio.timeout(2):
            while (await here.get("slack", "T1", "C1")).follow_up_in_threads:
                await asyncio.sleep(0.01)
        # After a long quiet spell the database is read before answering.
        await there.update("slack", "T1", "C1", follow_up_in_threads=True)
        clock.now += SETTINGS_TTL + STALE_GRACE
        assert (await here.get("slack", "T1", "C1")).follow_up_in_threads
    finally:
        await other_db.aclose()


async def test_a_read_in_flight_during_a_change_is_not_kept(core: Core) -> None:
    channels = core.channels
    reading = asyncio.create_task(channels.get("slack", "T1", "C1"))
    await asyncio.sleep(0)  # the read has started
    await channels.update("slack", "T1", "C1", allow_bots=True)
    assert await reading in (ChannelSettings(), ChannelSettings(allow_bots=True))
    assert await channels.get("slack", "T1", "C1") == ChannelSettings(allow_bots=True)
