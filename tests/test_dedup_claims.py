"""Claims of platform events: once per event across deliveries, processes and restarts."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core.app import Core
from core.dedup import ProcessedEvents
from core.storage.database import Database
from core.storage.models import ProcessedEventRow
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI


def _wal_exists(database_path: str) -> bool:
    return os.path.exists(f"{database_path}-wal")


async def _stored(db: Database) -> set[str]:
    async with db.session() as session:
        return set(await session.scalars(select(ProcessedEventRow.event_id)))


async def test_a_message_is_claimed_once_whichever_event_carries_it(core: Core) -> None:
    events = core.events
    assert await events.claim("slack", "message:T1:C1:1.0", "Ev1") is True  # app_mention
    assert await events.claim("slack", "message:T1:C1:1.0", "Ev2") is False  # its message event
    assert await events.claim("slack", "message:T1:C1:1.0", "Ev1") is False  # Slack's retry
    assert await _stored(core.db) == {"message:T1:C1:1.0", "Ev1", "Ev2"}


async def test_deliveries_at_once_in_one_process_give_one_claim(core: Core) -> None:
    results = await asyncio.gather(*(core.events.claim("slack", "m1", f"Ev{i}") for i in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await _stored(core.db) == {"m1", *(f"Ev{i}" for i in range(10))}


async def test_replicas_claiming_at_once_give_one_claim_per_event(core: Core) -> None:
    other = Database(core.db.url)
    replicas = [core.events, ProcessedEvents(other), ProcessedEvents(core.db)]
    try:
        for index in range(10):
            results = await asyncio.gather(*(replica.claim("slack", f"Ev{index}") for replica in replicas))
            assert sorted(results) == [False, False, True]
    finally:
        await other.aclose()


async def test_a_redelivery_to_this_process_is_answered_from_memory(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await core.events.claim("discord", "42") is True

    async def no_database(*_: object) -> int:
        raise AssertionError("the database was asked")

    monkeypatch.setattr(core.events, "_insert", no_database)
    assert await core.events.claim("discord", "42") is False


async def test_a_new_process_asks_the_database(core: Core) -> None:
    assert await core.events.claim("discord", "42") is True
    assert await ProcessedEvents(core.db).claim("discord", "42") is False


async def test_a_failed_claim_is_not_remembered(core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    events = core.events
    insert = events._insert
    failures = [OperationalError("INSERT", {}, Exception("database unavailable"))]

    async def failing_once(keys: list[tuple[str, str]]) -> int:
        if failures:
            await asyncio.sleep(0.05)
            raise failures.pop()
        return await insert(keys)

    monkeypatch.setattr(events, "_insert", failing_once)
    # The second delivery waits for the first claim; that one fails, so the second claims itself.
    first, second = await asyncio.gather(
        events.claim("slack", "m1", "Ev1"), events.claim("slack", "m1", "Ev2"), return_exceptions=True
    )
    assert isinstance(first, OperationalError) and second is True
    assert await events.claim("slack", "m1", "Ev1") is False


async def test_claims_expire_and_can_be_made_again(core: Core) -> None:
    assert await core.events.claim("slack", "Ev1") is True
    assert await core.events.forget_before(datetime.now(UTC) - timedelta(hours=1)) == 0
    assert await core.events.forget_before(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert await core.events.claim("slack", "Ev1") is True


@pytest.fixture
async def sqlite_core(sqlite_url: str, fake_openai: FakeOpenAI) -> AsyncIterator[Core]:
    opened = await Core.open(
        make_settings(database_url=sqlite_url, openai_base_url=fake_openai.base_url, openai_api_key="sk-test")
    )
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_sqlite_claims_wait_for_another_writer_without_blocking(sqlite_core: Core) -> None:
    path = sqlite_core.db.engine.url.database
    assert path is not None
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO processed_events (platform, event_id, received_at) VALUES (?, ?, ?)",
            ("slack", "Ev1", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")),
        )
        claim = asyncio.create_task(sqlite_core.events.claim("slack", "Ev1"))
        await asyncio.sleep(0.2)  # the event loop runs on while the claim waits for the lock
        assert not claim.done()
        writer.execute("COMMIT")
        assert await claim is False
    finally:
        writer.close()
    assert await sqlite_core.events.claim("slack", "Ev2") is True
    async with sqlite_core.db.session() as session:
        row = await session.get(ProcessedEventRow, ("slack", "Ev2"))
    assert row is not None
    assert abs(row.received_at.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(seconds=5)


async def test_closing_the_database_closes_the_claims_own_connection(
    sqlite_url: str, fake_openai: FakeOpenAI
) -> None:
    opened = await Core.open(
        make_settings(database_url=sqlite_url, openai_base_url=fake_openai.base_url, openai_api_key="sk-test")
    )
    assert await opened.events.claim("slack", "Ev1") is True  # written by the claims' own connection
    path = opened.db.engine.url.database
    assert path is not None
    await opened.aclose()
    # SQLite folds the WAL back into the file and deletes it when the last connection closes.
    assert not _wal_exists(path)
    # Closing it is not an engine event: any listener there makes every statement look for listeners.
    assert not opened.db.engine.sync_engine._has_events
