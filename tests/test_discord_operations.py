"""Discord operations: intents, command sync, sharding, archived threads, invite link, bots."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import discord
import pytest

from bots.discord.invite import bot_permissions, invite_url
from bots.discord.sync import sync_commands
from core.types import ConversationKey
from tests.discord_harness import DiscordWorld, discord_world, settings_for
from tests.fakes.discord_payloads import FakeChannel
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, StreamReply

MESSAGE_CONTENT_INTENT = 1 << 15
COMMANDS = {"chat", "reset", "usage", "settings", "persona", "schedule"}


async def start_thread(world: DiscordWorld, prompt: str = "Hi", answer: str = "Hello.") -> FakeChannel:
    """A conversation started by /chat; returns its thread."""
    world.llm.enqueue(StreamReply.words(answer))
    done = len(world.results)
    interaction = await world.command(world.channel, world.alice, "chat", prompt=prompt)
    await world.turns(done + 1)
    thread: FakeChannel = await world.discord.wait_for(
        lambda: world.discord.channels.get(interaction.original_id or 0)
    )
    return thread


async def test_without_message_content_intent_commands_and_mentions_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.discord")
    async with discord_world(tmp_path, monkeypatch, discord_message_content=False) as world:
        assert not world.discord.identifies[0]["intents"] & MESSAGE_CONTENT_INTENT
        assert "follow-ups in threads need a mention" in caplog.text
        thread = await start_thread(world)
        # Discord blanks other people's messages without the intent: not answered...
        await world.discord.send_message(thread, world.alice, "and then?")
        await asyncio.sleep(0.3)
        assert len(world.llm.requests) == 1
        # ...but a mention carries its content and continues the conversation.
        world.llm.enqueue(StreamReply.words("Then this."))
        bot = world.discord.bot
        await world.discord.send_message(thread, world.alice, f"<@{bot.id}> and then?", mentions=[bot])
        await world.turns(2)
        assert [m.content for m in world.discord.bot_messages(thread.id)] == ["Then this."]
        assert world.llm.requests[1]["messages"][-1]["content"] == "Alice: and then?"
        assert len(world.llm.requests[1]["messages"]) == 4


async def test_with_message_content_intent_it_is_requested(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_world(tmp_path, monkeypatch) as world:
        assert world.discord.identifies[0]["intents"] & MESSAGE_CONTENT_INTENT


async def test_commands_are_published_only_when_they_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_world(tmp_path, monkeypatch) as world:
        fake = world.discord
        assert fake.command_writes == 1
        published = {command["name"] for command in fake.commands[None]}
        assert published == COMMANDS
        by_name = {c["name"]: c for c in fake.commands[None]}
        assert {o["name"] for o in by_name["persona"]["options"]} == {
            "list",
            "show",
            "use",
            "reset",
            "create",
            "edit",
            "delete",
            "default",
        }
        [default] = [o for o in by_name["persona"]["options"] if o["name"] == "default"]
        assert default["type"] == 2 and {o["name"] for o in default["options"]} == {"use", "reset"}
        assert {o["name"] for o in by_name["schedule"]["options"]} == {"add", "list", "remove"}
        assert [o["name"] for o in by_name["settings"]["options"]] == [
            "reply_in_thread",
            "follow_up_in_threads",
            "allow_bots",
        ]
        # A second start with the same commands: one GET, no PUT.
        second = type(world.adapter)(
            world.core, None, ready_timeout=5.0, client_options={"guild_ready_timeout": 0.05}
        )
        try:
            await second.start()
        finally:
            await second.stop()
        assert fake.command_writes == 1
        assert len(fake.requests_to("GET", r"/applications/\d+/commands$")) == 2
        # Discord holds an older version (a changed description): the next start publishes.
        fake.commands[None][0]["description"] = "an older description"
        third = type(world.adapter)(
            world.core, None, ready_timeout=5.0, client_options={"guild_ready_timeout": 0.05}
        )
        try:
            await third.start()
        finally:
            await third.stop()
        assert fake.command_writes == 2
        # The CLI hook publishes on demand, to a guild here.
        result = await sync_commands(world.core.settings, world.guild.id)
        assert result == f"published {len(COMMANDS)} commands to guild {world.guild.id}"
        assert {c["name"] for c in fake.commands[world.guild.id]} == COMMANDS
        assert fake.command_writes == 3


async def test_dev_guild_gets_the_commands_instead_of_everyone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_world(tmp_path, monkeypatch, discord_dev_guild_id=123456789) as world:
        assert None not in world.discord.commands
        assert {c["name"] for c in world.discord.commands[123456789]} == COMMANDS


async def test_sharded_bot_connects_every_shard_and_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def identify_at_once(*_args: object, **_kwargs: object) -> None:
        return None  # discord.py waits 5 s between shard IDENTIFYs (Discord's rate limit)

    monkeypatch.setattr(discord.Client, "before_identify_hook", identify_at_once)
    async with discord_world(tmp_path, monkeypatch, discord_shard_count=2) as world:
        assert isinstance(world.adapter.client, discord.AutoShardedClient)
        assert sorted(tuple(i["shard"]) for i in world.discord.identifies) == [(0, 2), (1, 2)]
        thread = await start_thread(world, "Hi", "Hello from a shard.")
        assert thread.parent_id == world.channel.id
        assert world.discord.bot_messages(world.channel.id)[0].content == "Hello from a shard."


async def test_archived_thread_is_reopened_to_finish_the_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_world(tmp_path, monkeypatch) as world:
        thread = await start_thread(world)
        answer = " ".join(f"word{index}" for index in range(30))
        world.llm.enqueue(StreamReply.words(answer, chunk_delay=0.02))
        await world.discord.send_message(thread, world.alice, "tell me more")
        await world.discord.wait_for(
            lambda: any(len(m.history) >= 2 for m in world.discord.bot_messages(thread.id))
        )
        await world.discord.archive_thread(thread)
        [_, result] = await world.turns(2)
        assert result.status == "complete"
        [reply] = world.discord.bot_messages(thread.id)
        assert reply.content == answer and not thread.archived
        assert world.discord.requests_to("PATCH", rf"^/channels/{thread.id}$")


async def test_locked_thread_stops_the_reply_with_a_clear_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with discord_world(tmp_path, monkeypatch) as world:
        thread = await start_thread(world)
        world.llm.enqueue(
            StreamReply.words(" ".join(f"word{index}" for index in range(40)), chunk_delay=0.02)
        )
        await world.discord.send_message(thread, world.alice, "tell me more")
        await world.discord.wait_for(
            lambda: any(len(m.history) >= 2 for m in world.discord.bot_messages(thread.id))
        )
        await world.discord.archive_thread(thread, locked=True)
        [_, result] = await world.turns(2)
        assert result.status == "stopped"
        assert f"thread {thread.id}: it is archived and locked" in caplog.text
        assert world.adapter.ready()


async def test_other_bots_are_answered_only_where_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_world(tmp_path, monkeypatch) as world:
        await world.core.channels.update(
            "discord", str(world.guild.id), str(world.channel.id), allow_bots=True
        )
        robot = world.discord.user("Robot", bot=True)
        bot = world.discord.bot
        world.llm.enqueue(StreamReply.words("Hello, fellow bot."))
        await world.discord.send_message(world.channel, robot, f"<@{bot.id}> hello", mentions=[bot])
        [result] = await world.turns(1)
        assert result.status == "complete"
        assert world.llm.requests[0]["messages"][-1]["content"] == "Robot: hello"


async def test_bad_token_fails_start_without_logging_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bots.discord.adapter import DiscordAdapter
    from core.app import Core

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    fake, llm = FakeDiscord(), FakeOpenAI()
    await fake.start()
    await llm.start()
    core = await Core.open(settings_for(tmp_path, fake, llm, discord_token="wrong-secret-token"))
    adapter = DiscordAdapter(core, None, ready_timeout=2.0)
    try:
        with pytest.raises(discord.LoginFailure):
            await adapter.start()
        assert not adapter.ready()
    finally:
        await adapter.stop()
        await core.aclose()
        await llm.stop()
        await fake.close()
    assert "wrong-secret-token" not in caplog.text


def test_invite_link_asks_for_the_minimum() -> None:
    permissions = bot_permissions()
    assert (
        permissions.send_messages
        and permissions.send_messages_in_threads
        and permissions.create_public_threads
    )
    assert permissions.view_channel and permissions.read_message_history
    assert (
        not permissions.administrator and not permissions.mention_everyone and not permissions.manage_messages
    )
    url = invite_url(1234)
    assert "client_id=1234" in url and "scope=bot+applications.commands" in url
    assert f"permissions={permissions.value}" in url


async def test_doctor_check_reports_the_bot_and_its_invite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bots.discord.doctor import check_discord

    async with discord_world(tmp_path, monkeypatch) as world:
        ok, summary = await check_discord(world.core.settings)
        assert ok and summary.startswith("logged in as threadline")
        assert f"client_id={world.discord.application_id}" in summary
        bad = world.core.settings.model_copy(update={"discord_token": "nope"})
        ok, summary = await check_discord(bad)
        assert not ok and "refused" in summary and "nope" not in summary


async def test_platform_port_opens_threads_and_edits_earlier_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_world(tmp_path, monkeypatch) as world:
        fake, guild = world.discord, str(world.guild.id)
        key, surface = await world.adapter.open_thread(guild, str(world.channel.id), "⏰ Daily stand-up")
        [header] = fake.bot_messages(world.channel.id)
        assert header.content == "⏰ Daily stand-up" and header.allowed_mentions == {
            "parse": [],
            "replied_user": True,
        }
        assert key == ConversationKey("discord", guild, str(world.channel.id), str(header.id))
        posted = await surface.post("What did you do yesterday?")
        assert fake.messages[int(posted)].channel_id == header.id  # inside the new thread

        # After a restart, the core finishes a /chat reply: its first part is the thread's starter
        # message in the parent channel, later parts are in the thread.
        interaction = await world.command(world.channel, world.alice, "chat", prompt="Hi")
        await world.turns(1)
        thread_id = interaction.original_id or 0
        later = world.adapter.surface_for(
            ConversationKey("discord", guild, str(world.channel.id), str(thread_id))
        )
        await later.edit(str(thread_id), "rewritten first part")
        continuation = await later.post("a later part")
        await later.edit(continuation, "a later part, final")
        assert fake.original(interaction).content == "rewritten first part"
        assert fake.messages[int(continuation)].channel_id == thread_id
        assert fake.messages[int(continuation)].content == "a later part, final"


async def test_stop_receiving_takes_no_new_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with discord_world(tmp_path, monkeypatch) as world:
        await world.adapter.stop_receiving()
        bot = world.discord.bot
        await world.discord.send_message(world.channel, world.alice, f"<@{bot.id}> hi", mentions=[bot])
        refused = await world.command(world.channel, world.alice, "chat", prompt="Hi")
        assert refused.responded == 4 and "restarting" in (refused.response_data or {})["content"]
        await asyncio.sleep(0.2)
        assert world.llm.requests == [] and world.results == []


def test_fake_discord_refuses_commands_that_discord_would_refuse() -> None:
    from tests.fakes.discord_server import _command_problems

    bad = {
        "name": "Schedule",
        "description": "x" * 101,
        "options": [
            {"name": "later", "description": "optional", "type": 3},
            {"name": "first", "description": "", "type": 3, "required": True},
        ],
    }
    assert _command_problems(bad) == [
        "/Schedule: name must be 1-32 lowercase letters, digits, - or _",
        "/Schedule: description must be 1-100 characters",
        "/Schedule: required options must come before optional ones",
        "/Schedule/first: description must be 1-100 characters",
    ]
