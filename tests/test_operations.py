"""Operations: scheduled prompts, retention, de-dup expiry, crash recovery, usage, quotas, leases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from core.app import Core
from core.engine import Turn
from core.scheduler import INTERRUPTED_NOTICE, Scheduler
from core.schedules import ScheduleInvalid
from core.storage.models import ConversationRow, MessageRow, ProcessedEventRow
from core.surface import Surface
from core.types import Author, ConversationKey
from core.usage import Prices, Quotas, UsageService, quota_refusal
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI, StreamReply
from tests.fakes.surface import FakeSurface

ADA = Author("U1", "Ada")
PARIS_FRIDAY_0859 = datetime(2026, 11, 27, 7, 59, tzinfo=UTC)  # 08:59 in Paris (UTC+1)


class FakePort:
    """A platform whose threads are FakeSurfaces; records what was opened."""

    name = "slack"

    def __init__(self) -> None:
        self.surfaces: dict[str, FakeSurface] = {}
        self.headers: list[str] = []

    def surface_for(self, key: ConversationKey) -> Surface:
        return self.surfaces.setdefault(key.thread, FakeSurface())

    async def open_thread(self, workspace: str, channel: str, header: str) -> tuple[ConversationKey, Surface]:
        self.headers.append(header)
        key = ConversationKey("slack", workspace, channel, f"thread-{len(self.headers)}")
        return key, self.surface_for(key)


async def test_scheduled_prompt_fires_once_per_tick_in_its_time_zone(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    schedule = await core.schedules.add(
        "slack",
        "T1",
        "C1",
        cron="0 9 * * 1-5",
        timezone="Europe/Paris",
        prompt="What are you working on today?",
        persona_name="support",
        created_by="U1",
    )
    assert await core.schedules.in_scope("slack", "T1", "C1") == [schedule]
    from sqlalchemy import update as sql_update

    from core.storage.models import ScheduleRow

    async with core.db.transaction() as session:  # created the evening before
        await session.execute(
            sql_update(ScheduleRow).values(created_at=PARIS_FRIDAY_0859 - timedelta(hours=12))
        )
    port = FakePort()
    scheduler = Scheduler(core, {"slack": port})
    other_replica = Scheduler(core, {"slack": port})

    assert (await scheduler.tick(PARIS_FRIDAY_0859)).fired == []
    nine = PARIS_FRIDAY_0859 + timedelta(minutes=1, seconds=5)
    reports = await asyncio.gather(scheduler.tick(nine), other_replica.tick(nine))
    assert sorted(r.fired for r in reports) == [[], [schedule.id]]
    await scheduler.wait_for_posts()
    await other_replica.wait_for_posts()
    assert port.headers == ["⏰ What are you working on today?"]
    [surface] = port.surfaces.values()
    assert surface.final_texts() == ["Echo: Scheduled prompt: What are you working on today?"]
    assert "customer-service" in fake_openai.requests[0]["messages"][0]["content"]  # the support persona

    # Same minute again: nothing; Saturday: nothing; Monday 09:00 Paris: fires.
    assert (await scheduler.tick(nine + timedelta(seconds=30))).fired == []
    assert (await scheduler.tick(nine + timedelta(days=1))).fired == []
    monday = datetime(2026, 11, 30, 8, 0, 10, tzinfo=UTC)
    assert (await scheduler.tick(monday)).fired == [schedule.id]
    await scheduler.wait_for_posts()
    assert len(port.headers) == 2


async def test_a_prompt_missed_while_down_is_skipped_not_posted_late(core: Core) -> None:
    schedule = await core.schedules.add("slack", "T1", "C1", cron="0 9 * * *", timezone="UTC", prompt="hi")
    port = FakePort()
    scheduler = Scheduler(core, {"slack": port})
    report = await scheduler.tick(datetime.now(UTC) + timedelta(days=2))
    assert report.skipped == [schedule.id] and port.headers == []


@pytest.mark.parametrize(
    ("cron", "zone", "message"),
    [
        ("0 9 * *", "UTC", "needs 5 fields"),
        ("0 25 * * *", "UTC", "not a valid cron"),
        ("0 9 * * *", "Mars/Olympus", "Unknown time zone"),
    ],
)
async def test_bad_schedules_are_explained(core: Core, cron: str, zone: str, message: str) -> None:
    with pytest.raises(ScheduleInvalid, match=message):
        await core.schedules.add("slack", "T1", "C1", cron=cron, timezone=zone, prompt="x")
    assert await core.schedules.remove("slack", "T1", 999) is False


async def test_retention_and_dedup_expiry(core: Core) -> None:
    old = ConversationKey("slack", "T1", "C1", "old")
    new = ConversationKey("slack", "T1", "C1", "new")
    for key in (old, new):
        await core.engine.handle_turn(Turn(key, ADA, "hello"), FakeSurface())
    async with core.db.transaction() as session:
        await session.execute(
            update(ConversationRow)
            .where(ConversationRow.thread == "old")
            .values(last_active_at=datetime.now(UTC) - timedelta(days=40))
        )
    await core.events.claim("slack", "Ev1")
    scheduler = Scheduler(core, {})
    assert await scheduler.apply_retention(datetime.now(UTC)) == 0  # retention off by default
    core.settings.retention_days = 30
    assert await scheduler.apply_retention(datetime.now(UTC)) == 1
    async with core.db.session() as session:
        threads = (await session.scalars(select(ConversationRow.thread))).all()
        messages = await session.scalar(select(func.count()).select_from(MessageRow))
    assert threads == ["new"] and messages == 2

    assert await scheduler.expire_events(datetime.now(UTC)) == 0
    assert await scheduler.expire_events(datetime.now(UTC) + timedelta(hours=25)) == 1
    async with core.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedEventRow)) == 0
    assert await core.events.claim("slack", "Ev1") is True


async def test_recovery_finalises_a_reply_left_streaming_by_a_crash(core: Core) -> None:
    key = ConversationKey("slack", "T1", "C1", "crashed")
    port = FakePort()
    surface = port.surface_for(key)
    placeholder = await surface.post("_Thinking…_ ▍")
    conversation_id = (await core.conversations.open(key)).conversation_id
    reply_id = await core.conversations.add_message(
        conversation_id,
        role="assistant",
        content="Half a sentence",
        token_count=0,
        status="streaming",
        token_encoding="o200k_base",
        platform_message_ids=[placeholder],
        created_at=datetime.now(UTC) - timedelta(minutes=5),
    )
    scheduler = Scheduler(core, {"slack": port})
    assert await scheduler.recover(datetime.now(UTC)) == 1
    assert surface.final_texts() == [f"Half a sentence\n\n{INTERRUPTED_NOTICE}"]
    async with core.db.session() as session:
        assert (await session.get(MessageRow, reply_id)).status == "interrupted"  # type: ignore[union-attr]
    assert await scheduler.recover(datetime.now(UTC)) == 0  # once only
    # The conversation is still usable.
    result = await core.engine.handle_turn(Turn(key, ADA, "still there?"), FakeSurface())
    assert result.status == "complete"


async def test_usage_report_and_prices(core: Core, fake_openai: FakeOpenAI) -> None:
    key = ConversationKey("slack", "T1", "C1", "t")
    fake_openai.enqueue(
        StreamReply.words("one two", usage=(1000, 500)), StreamReply.words("three", usage=(2000, 0))
    )
    await core.engine.handle_turn(Turn(key, ADA, "a"), FakeSurface())
    await core.engine.handle_turn(Turn(key, Author("U2", "Bob"), "b"), FakeSurface())
    now = datetime.now(UTC)
    channel = await core.usage.totals("slack", "T1", now - timedelta(days=1), channel="C1")
    assert channel.tokens == 3500
    assert channel.known_cost == pytest.approx((3000 * 0.15 + 500 * 0.60) / 1e6)
    ada = await core.usage.totals("slack", "T1", now - timedelta(days=1), user="U1")
    assert ada.tokens == 1500
    report = await core.usage.report("slack", "T1", "C1", "U1")
    assert "Today: 3,500 tokens, about $0.0008" in report and "Today: 1,500 tokens" in report
    assert Prices.with_overrides({}).cost("my-local-llama", 10, 10) is None
    unpriced = UsageService(core.db, Prices({}))
    assert "no price known for gpt-4o-mini" in await unpriced.report("slack", "T1", "C1", "U1")


async def test_daily_quota_refuses_without_calling_the_model(
    database_url: str, fake_openai: FakeOpenAI
) -> None:
    settings = make_settings(
        database_url=database_url,
        openai_base_url=fake_openai.base_url,
        openai_api_key="sk-test",
        daily_tokens_per_user=100,
    )
    core = await Core.open(settings)
    try:
        key = ConversationKey("slack", "T1", "C1", "q")
        fake_openai.enqueue(StreamReply.words("costly", usage=(90, 20)))
        await core.engine.handle_turn(Turn(key, ADA, "first"), FakeSurface())
        surface = FakeSurface()
        result = await core.engine.handle_turn(Turn(key, ADA, "second"), surface)
        assert result.status == "refused" and len(fake_openai.requests) == 1
        assert "used 110 of today's 100 tokens" in surface.final_texts()[0]
        other = await core.engine.handle_turn(Turn(key, Author("U2", "Bob"), "me too"), FakeSurface())
        assert other.status == "complete"
        assert (
            await quota_refusal(
                core.usage,
                Quotas(daily_tokens_per_channel=10_000),
                "slack",
                "T1",
                "C1",
                "U1",
                datetime.now(UTC),
            )
            is None
        )
    finally:
        await core.aclose()


async def test_lease_serialises_a_conversation_across_two_cores(
    database_url: str, fake_openai: FakeOpenAI
) -> None:
    """Two Core instances on one database stand in for two replicas."""
    settings = make_settings(
        database_url=database_url, openai_base_url=fake_openai.base_url, openai_api_key="k"
    )
    first, second = await Core.open(settings), await Core.open(settings)
    try:
        key = ConversationKey("slack", "T1", "C1", "shared")
        fake_openai.enqueue(StreamReply.words("slow answer", first_delay=0.4))
        a = asyncio.create_task(first.engine.handle_turn(Turn(key, ADA, "one"), FakeSurface()))
        await fake_openai.wait_for_requests(1)
        b = asyncio.create_task(second.engine.handle_turn(Turn(key, ADA, "two"), FakeSurface()))
        await asyncio.sleep(0.2)
        assert len(fake_openai.requests) == 1  # the second replica waits for the lease
        await asyncio.gather(a, b)
        assert [m["content"] for m in fake_openai.requests[1]["messages"][-3:]] == [
            "Ada: one",
            "slow answer",
            "Ada: two",
        ]
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_finished_turn_frees_its_lease_and_the_renewer_never_takes_it_back(
    database_url: str, fake_openai: FakeOpenAI
) -> None:
    from core.leases import ConversationLeases

    settings = make_settings(
        database_url=database_url, openai_base_url=fake_openai.base_url, openai_api_key="k"
    )
    core = await Core.open(settings)
    try:
        key = ConversationKey("slack", "T1", "C1", "lease")
        fake_openai.enqueue(StreamReply.words("done"))
        assert (await core.engine.handle_turn(Turn(key, ADA, "hi"), FakeSurface())).status == "complete"
        conversation_id = (await core.conversations.open(key)).conversation_id
        leases = ConversationLeases(core.db, lease_seconds=0.06)  # renewed every 20 ms
        assert not await leases.is_held(conversation_id)

        async with leases.hold(conversation_id) as held:
            assert await leases.is_held(conversation_id)
            async with core.db.engine.begin() as connection:
                await held.release().run(connection)
            held.released = True
            await asyncio.sleep(0.15)  # several renewals would have run
            assert not await leases.is_held(conversation_id)
        assert not await leases.is_held(conversation_id)
    finally:
        await core.aclose()


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [("0", "Sun"), ("7", "Sun"), ("1", "Mon"), ("6", "Sat"), ("sat", "Sat")],
)
def test_cron_weekdays_follow_standard_cron_numbering(weekday: str, expected: str) -> None:
    from core.schedules import cron_trigger

    trigger = cron_trigger(f"0 9 * * {weekday}", "UTC")
    fire = trigger.get_next_fire_time(None, PARIS_FRIDAY_0859)
    assert fire is not None and fire.strftime("%a") == expected


def test_cron_weekday_ranges_and_steps() -> None:
    from core.schedules import _weekday_field

    assert _weekday_field("1-5") == "mon,tue,wed,thu,fri"
    assert _weekday_field("1-5/2") == "mon,wed,fri"
    assert _weekday_field("0,6") == "sun,sat"
    with pytest.raises(ValueError):
        _weekday_field("8")
