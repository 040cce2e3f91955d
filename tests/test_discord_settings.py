"""Discord end to end: /usage and /settings (a thread speaks for its parent channel)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bots.discord.channel_settings import NEEDS_INTENT, describe_settings
from bots.discord.permissions import SETTINGS_REFUSAL
from core.channels import ChannelSettings
from tests.discord_harness import MODERATOR, DiscordWorld, discord_world
from tests.fakes.openai_server import StreamReply

ADMIN_ID = 4242


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordWorld]:
    async with discord_world(tmp_path, monkeypatch, admins=[str(ADMIN_ID)]) as created:
        yield created


def usage_text(channel: tuple[int, str], you: tuple[int, str]) -> str:
    month = f"{datetime.now(UTC):%B %Y}"
    sections = []
    for title, (tokens, cost) in (("This channel", channel), ("You", you)):
        totals = f"{tokens:,} tokens, about ${cost}"
        sections.append(f"**{title}**\n• Today: {totals}\n• This month ({month}): {totals}")
    return "\n\n".join(sections) + "\n\n_Costs are estimates from list prices; days and months are UTC._"


async def test_usage_counts_this_channel_and_the_person_asking(world: DiscordWorld) -> None:
    fake = world.discord
    # gpt-4o-mini costs $0.15 (input) and $0.60 (output) per million tokens.
    world.llm.enqueue(StreamReply.words("Hello Alice.", usage=(10_000, 2_000)))
    chat = await world.command(world.channel, world.alice, "chat", prompt="Hi")
    await world.turns(1)
    thread = await fake.wait_for(lambda: fake.channels.get(chat.original_id or 0))
    world.llm.enqueue(StreamReply.words("Hello Bob.", usage=(5_000, 1_200)))
    await fake.send_message(thread, world.bob, "Me too")
    await world.turns(2)
    world.llm.enqueue(StreamReply.words("Elsewhere.", usage=(1_000, 100)))
    await world.command(world.other_channel, world.alice, "chat", prompt="Over here")
    await world.turns(3)

    # In the thread, "this channel" is its parent channel (where its conversation is counted).
    alice = await world.command(thread, world.alice, "usage")
    assert alice.responded == 5  # acknowledged at once, privately, then answered
    assert await world.answer(alice) == usage_text((18_200, "0.0042"), (13_100, "0.0029"))
    bob = await world.command(world.other_channel, world.bob, "usage")
    assert await world.answer(bob) == usage_text((1_100, "0.0002"), (6_200, "0.0015"))
    assert fake.bot_messages(world.channel.id) == [fake.original(chat)]  # nothing public was posted


async def test_settings_show_and_change_the_channel_behaviour(world: DiscordWorld) -> None:
    channel, guild = world.channel, str(world.guild.id)
    shown = await world.answer(await world.command(channel, world.alice, "settings"))
    assert shown == "\n".join(
        [
            f"**Settings of <#{channel.id}>**",
            "• `reply_in_thread`: **on** — a mention in the channel is answered in a new thread",
            "• `follow_up_in_threads`: **on** — messages in the bot's threads are answered without a mention",
            "• `allow_bots`: **off** — other bots are ignored",
            "Change one with e.g. `/settings reply_in_thread:False` (needs Manage Channels).",
        ]
    )
    refused = await world.command(channel, world.alice, "settings", reply_in_thread=False)
    assert await world.answer(refused) == SETTINGS_REFUSAL
    assert await world.core.channels.get("discord", guild, str(channel.id)) == ChannelSettings()

    # Changed from inside a thread: the thread's parent channel is what changes.
    thread = world.discord.add_thread(channel, "side talk")
    changed = await world.command(
        thread, world.bob, "settings", reply_in_thread=False, allow_bots=True, permissions=MODERATOR
    )
    assert await world.answer(changed) == "\n".join(
        [
            f"✅ Saved. Settings of <#{channel.id}>:",
            "• `reply_in_thread`: **off** — a mention in the channel is answered inline, in the channel",
            "• `follow_up_in_threads`: **on** — messages in the bot's threads are answered without a mention",
            "• `allow_bots`: **on** — other bots are answered too",
        ]
    )
    assert await world.core.channels.get("discord", guild, str(channel.id)) == ChannelSettings(
        follow_up_in_threads=True, reply_in_thread=False, allow_bots=True
    )
    assert await world.core.channels.get("discord", guild, str(thread.id)) == ChannelSettings()

    # THREADLINE_ADMINS may change them without the permission.
    admin = world.discord.user("Admin")
    admin.id = ADMIN_ID
    await world.answer(await world.command(channel, admin, "settings", follow_up_in_threads=False))
    assert not (await world.core.channels.get("discord", guild, str(channel.id))).follow_up_in_threads

    # What people see: a mention is now answered inline, replying to the message.
    world.llm.enqueue(StreamReply.words("Inline, as configured."))
    bot = world.discord.bot
    message = await world.discord.send_message(channel, world.alice, f"<@{bot.id}> hi", mentions=[bot])
    await world.turns(1)
    [reply] = world.discord.bot_messages(channel.id)
    assert reply.content == "Inline, as configured." and reply.reference == message.id
    assert message.id not in world.discord.channels


def test_settings_say_when_thread_follow_ups_need_the_intent() -> None:
    without = describe_settings(ChannelSettings(), message_content=False)
    assert without[1] == (
        "• `follow_up_in_threads`: **on** — messages in the bot's threads are answered without a mention"
        + NEEDS_INTENT
    )
    assert NEEDS_INTENT not in describe_settings(ChannelSettings(), message_content=True)[1]


async def test_a_settings_change_applies_to_the_next_mention(world: DiscordWorld) -> None:
    fake, channel, bot = world.discord, world.channel, world.discord.bot
    world.llm.enqueue(StreamReply.words("In a thread."))
    first = await fake.send_message(channel, world.alice, f"<@{bot.id}> one", mentions=[bot])
    await world.turns(1)
    assert first.id in fake.channels and fake.bot_messages(channel.id) == []

    changed = await world.command(
        channel, world.bob, "settings", reply_in_thread=False, permissions=MODERATOR
    )
    assert (await world.answer(changed)).startswith("✅ Saved.")
    world.llm.enqueue(StreamReply.words("Inline now."))
    second = await fake.send_message(channel, world.alice, f"<@{bot.id}> two", mentions=[bot])
    await world.turns(2)
    [reply] = fake.bot_messages(channel.id)
    assert reply.content == "Inline now." and reply.reference == second.id
    assert second.id not in fake.channels

    changed = await world.command(channel, world.bob, "settings", reply_in_thread=True, permissions=MODERATOR)
    await world.answer(changed)
    world.llm.enqueue(StreamReply.words("Threads again."))
    third = await fake.send_message(channel, world.alice, f"<@{bot.id}> three", mentions=[bot])
    await world.turns(3)
    assert third.id in fake.channels and len(fake.bot_messages(channel.id)) == 1
