"""Discord end to end: /schedule, scheduled prompts fired by the core scheduler, crash recovery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bots.discord.permissions import SCHEDULE_REFUSAL
from bots.discord.schedules import COMMON_ZONES
from core.personas.model import Persona
from core.scheduler import INTERRUPTED_NOTICE, Scheduler
from core.schedules import Schedule
from core.storage.models import ScheduleRow
from tests.discord_harness import MODERATOR, DiscordWorld, discord_world
from tests.fakes.openai_server import StreamReply

PIRATE = Persona(
    name="pirate", description="Talks like a pirate", system_prompt="You are a pirate.", model="gpt-4o"
)
STANDUP = "What are you working on today?"
# A cron whose next run cannot change while a test runs (it names a leap day).
LEAP_DAY = "0 9 29 2 *"


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordWorld]:
    async with discord_world(tmp_path, monkeypatch) as created:
        await created.core.personas.create(PIRATE)
        yield created


async def schedules(world: DiscordWorld) -> list[Schedule]:
    return await world.core.schedules.in_scope("discord", str(world.guild.id))


async def started_at(world: DiscordWorld, schedule_id: int) -> datetime:
    """Where the scheduler counts from for a schedule that never ran: its creation time (UTC)."""
    async with world.core.db.session() as session:
        created = await session.scalar(select(ScheduleRow.created_at).where(ScheduleRow.id == schedule_id))
    assert created is not None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


async def test_schedule_add_list_and_remove(world: DiscordWorld) -> None:
    channel = world.channel
    add: dict[str, Any] = {"cron": LEAP_DAY, "timezone": "europe/paris", "prompt": STANDUP}

    refused = await world.command(channel, world.alice, "schedule", sub="add", **add)
    assert await world.answer(refused) == SCHEDULE_REFUSAL
    assert await schedules(world) == []

    added = await world.command(
        channel, world.alice, "schedule", sub="add", persona="pirate", permissions=MODERATOR, **add
    )
    [schedule] = await schedules(world)
    assert (schedule.channel, schedule.cron, schedule.timezone, schedule.prompt, schedule.persona_name) == (
        str(channel.id),
        LEAP_DAY,
        "Europe/Paris",  # typed in lower case, stored as IANA spells it
        STANDUP,
        "pirate",
    )
    assert schedule.created_by == str(world.alice.id)
    described = schedule.describe(datetime.now(UTC))
    assert (
        described.startswith(f"#{schedule.id} `0 9 29 2 *` (next ") and "Europe/Paris) as pirate" in described
    )
    assert await world.answer(added) == (
        f"⏰ Scheduled {described}\n"
        f"Each run posts the prompt in <#{channel.id}> and the answer in a thread under it. "
        f"`/schedule remove id:{schedule.id}` stops it."
    )

    # Anyone may list; a thread lists its channel's schedules; another channel has none.
    thread = world.discord.add_thread(channel, "side talk")
    listing = await world.answer(await world.command(thread, world.bob, "schedule", sub="list"))
    assert listing == f"**Schedules of <#{channel.id}>**\n• {described}"
    other = await world.answer(await world.command(world.other_channel, world.bob, "schedule", sub="list"))
    assert other == f"No schedules in <#{world.other_channel.id}>. Add one with `/schedule add`."

    # Removing needs the permission, and happens in the schedule's own channel.
    refused = await world.command(channel, world.bob, "schedule", sub="remove", id=schedule.id)
    assert await world.answer(refused) == SCHEDULE_REFUSAL
    elsewhere = await world.command(
        world.other_channel, world.bob, "schedule", sub="remove", id=schedule.id, permissions=MODERATOR
    )
    assert await world.answer(elsewhere) == (
        f"Schedule #{schedule.id} belongs to <#{channel.id}>: run `/schedule remove` there."
    )
    assert len(await schedules(world)) == 1
    removed = await world.command(
        thread, world.bob, "schedule", sub="remove", id=schedule.id, permissions=MODERATOR
    )
    assert await world.answer(removed) == f"🗑️ Removed schedule #{schedule.id}: {STANDUP}"
    assert await schedules(world) == []
    again = await world.command(
        channel, world.bob, "schedule", sub="remove", id=schedule.id, permissions=MODERATOR
    )
    assert await world.answer(again) == (
        f"There is no schedule #{schedule.id} here. `/schedule list` shows them."
    )


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        (
            {"cron": "0 9 * *", "timezone": "UTC"},
            "❌ '0 9 * *' is not a cron expression: it needs 5 fields (minute hour day month weekday), "
            "e.g. '0 9 * * 1-5' for weekdays at 09:00.",
        ),
        (
            {"cron": "0 9 * * 1-5", "timezone": "Mars/Olympus_Mons"},
            "❌ Unknown time zone 'Mars/Olympus_Mons': use a name like Europe/Paris or UTC.",
        ),
        (
            {"cron": "0 9 * * 1-5", "timezone": "UTC", "persona": "ghost"},
            "There is no persona named 'ghost'. `/persona list` shows them.",
        ),
    ],
    ids=["cron-with-four-fields", "unknown-time-zone", "unknown-persona"],
)
async def test_schedule_add_explains_what_is_wrong(
    world: DiscordWorld, values: dict[str, str], shown: str
) -> None:
    answer = await world.command(
        world.channel, world.alice, "schedule", sub="add", prompt=STANDUP, permissions=MODERATOR, **values
    )
    assert await world.answer(answer) == shown
    assert await schedules(world) == []


async def test_time_zones_and_personas_autocomplete(world: DiscordWorld) -> None:
    async def complete(option: str, typed: str) -> list[dict[str, object]]:
        focused = {"name": option, "type": 3, "value": typed, "focused": True}
        sent = [{"name": "add", "type": 1, "options": [focused]}]
        interaction = await world.discord.autocomplete(world.channel, world.alice, "schedule", sent)
        await world.discord.wait_response(interaction)
        assert interaction.responded == 8
        return interaction.choices

    assert [c["value"] for c in await complete("timezone", "")] == list(COMMON_ZONES)
    new_york = await complete("timezone", "new york")
    assert new_york[0] == {"name": "America/New_York", "value": "America/New_York"}
    kolkata = [c["value"] for c in await complete("timezone", "kolk")]
    assert kolkata == ["Asia/Kolkata"]
    assert len(await complete("timezone", "america/")) == 25  # Discord's maximum
    assert await complete("persona", "pir") == [{"name": "pirate — Talks like a pirate", "value": "pirate"}]


async def test_scheduled_prompt_posts_a_header_and_answers_in_its_thread(world: DiscordWorld) -> None:
    fake, channel = world.discord, world.channel
    added = await world.command(
        channel,
        world.alice,
        "schedule",
        sub="add",
        cron="30 8 * * 1-5",
        timezone="Europe/Paris",
        prompt=STANDUP,
        persona="pirate",
        permissions=MODERATOR,
    )
    assert (await world.answer(added)).startswith("⏰ Scheduled #")
    [schedule] = await schedules(world)
    fire = schedule.next_run(await started_at(world, schedule.id) + timedelta(seconds=1))
    assert fire is not None

    scheduler = Scheduler(world.core, {"discord": world.adapter})
    assert (await scheduler.tick(fire - timedelta(seconds=1))).fired == []  # not yet
    answer = "Arr, I be charting the course to the release."
    world.llm.enqueue(StreamReply.words(answer))
    report = await scheduler.tick(fire + timedelta(seconds=1))
    assert report.fired == [schedule.id]
    await scheduler.wait_for_posts()

    [header] = fake.bot_messages(channel.id)
    assert header.content == f"⏰ {STANDUP}"
    thread = fake.channels[header.id]  # opened from the header
    assert thread.parent_id == channel.id and thread.name == f"⏰ {STANDUP}"
    [reply] = fake.bot_messages(thread.id)
    assert reply.content == answer and len(reply.history) >= 2  # placeholder first, then the answer
    [result] = world.results
    assert result.status == "complete" and result.message_ids == [str(reply.id)]
    request = world.llm.requests[0]
    assert request["messages"][0] == {"role": "system", "content": "You are a pirate."}
    assert request["messages"][-1] == {"role": "user", "content": f"Scheduled prompt: {STANDUP}"}
    assert (await scheduler.tick(fire + timedelta(seconds=2))).fired == []  # once per fire time

    # People answer in the thread: the same conversation and persona go on there.
    world.llm.enqueue(StreamReply.words("Aye, no blockers."))
    await fake.send_message(thread, world.bob, "Any blockers?")
    await world.turns(2)
    assert [m.content for m in fake.bot_messages(thread.id)] == [answer, "Aye, no blockers."]
    follow_up = world.llm.requests[1]["messages"]
    assert [(m["role"], m["content"]) for m in follow_up] == [
        ("system", "You are a pirate."),
        ("user", f"Scheduled prompt: {STANDUP}"),
        ("assistant", answer),
        ("user", "Bob: Any blockers?"),
    ]


async def test_restart_finishes_replies_left_streaming_with_a_notice(world: DiscordWorld) -> None:
    """Replies a killed process left half-written, in the three places a reply can live."""
    fake, guild = world.discord, str(world.guild.id)
    # 1. A /chat reply: the command's response, whose thread holds the conversation.
    world.llm.enqueue(StreamReply.words("Once upon a time there was a dragon."))
    chat = await world.command(world.channel, world.alice, "chat", prompt="Tell me a story")
    await world.turns(1)
    thread = await fake.wait_for(lambda: fake.channels.get(chat.original_id or 0))
    # 2. A reply inside that thread.
    world.llm.enqueue(StreamReply.words("The dragon slept for a hundred years."))
    await fake.send_message(thread, world.alice, "And then?")
    await world.turns(2)
    # 3. An inline reply in a channel.
    await world.core.channels.update("discord", guild, str(world.other_channel.id), reply_in_thread=False)
    world.llm.enqueue(StreamReply.words("Inline answers are short."))
    bot = fake.bot
    await fake.send_message(world.other_channel, world.bob, f"<@{bot.id}> inline?", mentions=[bot])
    await world.turns(3)

    # The process dies mid-stream: the rows say "streaming" with the last checkpoint, and people see
    # the text of that moment with the streaming indicator.
    checkpoints = ["Once upon a time", "The dragon slept", "Inline answers"]
    replies = [row for row in await world.rows() if row.role == "assistant"]
    shown = []
    for row, text in zip(replies, checkpoints, strict=True):
        [message_id] = row.platform_message_ids or []
        await world.core.conversations.update_message(row.id, status="streaming", content=text)
        message = fake.messages[int(message_id)]
        message.content = text + " ▍"
        shown.append(message)
    starter, in_thread, inline = shown
    assert starter is fake.original(chat) and starter.channel_id == world.channel.id
    assert in_thread.channel_id == thread.id and inline.channel_id == world.other_channel.id

    scheduler = Scheduler(world.core, {"discord": world.adapter})
    assert await scheduler.recover(datetime.now(UTC) + timedelta(minutes=2)) == 3
    assert [message.content for message in shown] == [
        f"{text}\n\n{INTERRUPTED_NOTICE}" for text in checkpoints
    ]
    assert all(message.content.endswith(INTERRUPTED_NOTICE) for message in shown)
    assert [row.status for row in await world.rows() if row.role == "assistant"] == ["interrupted"] * 3
    # The /chat reply lives in the parent channel: the bot edited it there with its own token.
    assert fake.requests_to("PATCH", rf"^/channels/{world.channel.id}/messages/{starter.id}$")
    assert await scheduler.recover(datetime.now(UTC) + timedelta(minutes=3)) == 0  # once only
