"""Discord end to end: /chat, threads, mentions, long replies, mention safety, 429s, /reset."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.types import ConversationKey
from tests.discord_harness import DiscordWorld, discord_world
from tests.fakes.discord_server import FakeInteraction
from tests.fakes.openai_server import StreamReply

SAFE_MENTIONS = {"parse": [], "replied_user": True}


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordWorld]:
    async with discord_world(tmp_path, monkeypatch) as created:
        yield created


async def chat(world: DiscordWorld, prompt: str, answer: str, **reply: Any) -> FakeInteraction:
    """Run /chat in #general and wait until its turn finished."""
    world.llm.enqueue(StreamReply.words(answer, **reply))
    done = len(world.results)
    interaction = await world.command(world.channel, world.alice, "chat", prompt=prompt)
    await world.turns(done + 1)
    return interaction


async def test_chat_defers_then_streams_the_exact_reply(world: DiscordWorld) -> None:
    answer = "Paris is the capital of France. It has about two million inhabitants."
    interaction = await chat(world, "What is the capital of France?", answer, chunk_delay=0.01)
    assert interaction.responded == 5  # deferred ("thinking") before anything else
    assert world.results[0].status == "complete"
    reply = world.discord.original(interaction)
    assert reply.content == answer
    assert len(reply.history) > 2  # placeholder, growing text, final text: it streamed
    assert world.llm.requests[0]["messages"][-1]["content"] == "Alice: What is the capital of France?"
    # The conversation goes on in a thread opened from the reply (thread id == reply id).
    thread = await world.discord.wait_for(lambda: world.discord.channels.get(reply.id))
    assert thread.parent_id == world.channel.id and thread.name == "What is the capital of France?"
    rows = await world.rows()
    assert [(row.role, row.status) for row in rows] == [("user", "complete"), ("assistant", "complete")]
    assert rows[1].content == answer and rows[1].platform_message_ids == [str(reply.id)]


async def test_thread_follow_up_without_command_continues_the_conversation(world: DiscordWorld) -> None:
    interaction = await chat(world, "What is the capital of France?", "Paris.")
    thread = await world.discord.wait_for(lambda: world.discord.channels.get(interaction.original_id or 0))
    world.llm.enqueue(StreamReply.words("Berlin."))
    await world.discord.send_message(thread, world.bob, "And of Germany?")
    [_, result] = await world.turns(2)
    assert result.status == "complete"
    [answer] = world.discord.bot_messages(thread.id)
    assert answer.content == "Berlin."
    messages = world.llm.requests[1]["messages"]
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("user", "Alice: What is the capital of France?"),
        ("assistant", "Paris."),
        ("user", "Bob: And of Germany?"),
    ]
    # A replayed MESSAGE_CREATE (gateway RESUME) is not answered twice.
    await world.discord.redeliver(world.discord.messages[max(world.discord.messages)])
    await asyncio.sleep(0.3)
    assert len(world.llm.requests) == 2 and len(world.discord.bot_messages(thread.id)) == 1


async def test_messages_in_foreign_threads_and_own_messages_are_ignored(world: DiscordWorld) -> None:
    unrelated = world.discord.add_thread(world.channel, "people talking")
    await world.discord.send_message(unrelated, world.alice, "just chatting")
    await world.discord.send_message(world.channel, world.alice, "no mention here")
    other_bot = world.discord.user("Robot", bot=True)
    await world.discord.send_message(
        world.channel, other_bot, f"<@{world.discord.bot.id}> hi", mentions=[world.discord.bot]
    )
    await asyncio.sleep(0.3)
    assert world.llm.requests == [] and world.results == []


async def test_mention_in_channel_is_answered_in_a_new_thread(world: DiscordWorld) -> None:
    world.llm.enqueue(StreamReply.words("Hello Alice and Bob!"))
    bot = world.discord.bot
    message = await world.discord.send_message(
        world.channel, world.alice, f"<@{bot.id}> say hi to <@{world.bob.id}>", mentions=[bot, world.bob]
    )
    [result] = await world.turns(1)
    assert result.status == "complete"
    thread = world.discord.channels[message.id]  # opened from the mention (thread id == message id)
    assert thread.parent_id == world.channel.id and thread.name == "say hi to @Bob"
    [answer] = world.discord.bot_messages(thread.id)
    assert answer.content == "Hello Alice and Bob!"
    assert world.discord.bot_messages(world.channel.id) == []
    assert world.llm.requests[0]["messages"][-1]["content"] == "Alice: say hi to @Bob"
    key = ConversationKey("discord", str(world.guild.id), str(world.channel.id), str(message.id))
    assert await world.core.engine.has_conversation(key)


async def test_the_bots_own_posts_and_edits_are_dropped_on_arrival_and_nobody_elses(
    world: DiscordWorld,
) -> None:
    created: list[int] = []
    edited: list[int] = []
    client = world.adapter.client
    handle = client.on_message

    async def on_message(message: Any) -> None:
        created.append(message.id)
        await handle(message)

    async def on_raw_message_edit(update: Any) -> None:
        edited.append(update.message_id)

    client.on_message = on_message  # type: ignore[method-assign]
    client.on_raw_message_edit = on_raw_message_edit  # type: ignore[attr-defined]
    world.llm.enqueue(StreamReply.words("one two three four five six seven eight", chunk_delay=0.15))
    bot = world.discord.bot
    mention = await world.discord.send_message(
        world.channel, world.alice, f"<@{bot.id}> count", mentions=[bot]
    )
    [result] = await world.turns(1)
    assert result.status == "complete"
    [answer] = world.discord.bot_messages(mention.id)
    assert answer.content == "one two three four five six seven eight" and len(answer.history) > 2
    # The fake echoed the post and every edit, as Discord does; none reached discord.py's parsing.
    assert created == [mention.id] and edited == []

    # A person's edit, and an edit of the bot's own message that carries components, still do.
    await world.discord.dispatch(
        "MESSAGE_UPDATE", {**mention.payload(), "content": "edited"}, guild_id=world.guild.id
    )
    with_view = {**answer.payload(), "components": [{"type": 1, "components": []}]}
    await world.discord.dispatch("MESSAGE_UPDATE", with_view, guild_id=world.guild.id)
    for _ in range(100):
        if len(edited) == 2:
            break
        await asyncio.sleep(0.02)
    assert edited == [mention.id, answer.id]


async def test_mention_inline_when_the_channel_says_so(world: DiscordWorld) -> None:
    await world.core.channels.update(
        "discord", str(world.guild.id), str(world.channel.id), reply_in_thread=False
    )
    world.llm.enqueue(StreamReply.words("Inline answer."))
    bot = world.discord.bot
    message = await world.discord.send_message(world.channel, world.alice, f"<@{bot.id}> hi", mentions=[bot])
    await world.turns(1)
    [answer] = world.discord.bot_messages(world.channel.id)
    assert answer.content == "Inline answer." and answer.reference == message.id
    assert message.id not in world.discord.channels


def unsplit(parts: list[str], answer: str, opening: str = "```python\n") -> str:
    """The model's text back from the parts: drop the fence lines the splitter added at each cut."""
    text = parts[0]
    for part in parts[1:]:
        candidates = [text + part]
        if part.startswith(opening) and text.endswith("```"):
            rest = part[len(opening) :]
            candidates = [text[:-3] + rest, text[:-4] + rest, *candidates]
        text = next((c for c in candidates if answer.startswith(c)), candidates[-1])
    return text


async def test_long_answer_with_code_is_split_into_exact_balanced_parts(world: DiscordWorld) -> None:
    blocks = []
    for index in range(16):
        code = "\n".join(
            f"    total_{index} += value_{line}  # adds step {line} of {index}" for line in range(9)
        )
        blocks.append(f"Step {index}: we add the values in a loop like this.\n\n```python\n{code}\n```\n")
    answer = "\n".join(blocks)
    assert len(answer) > 5000
    interaction = await chat(world, "Explain the loop", answer)
    [result] = world.results
    assert result.status == "complete" and result.text == answer
    thread_id = interaction.original_id or 0
    parts = [world.discord.original(interaction).content] + [
        m.content for m in world.discord.bot_messages(thread_id)
    ]
    assert len(parts) >= 3 and len(result.message_ids) == len(parts)
    for part in parts:
        assert 0 < len(part) <= 2000
        assert sum(line.startswith("```") for line in part.split("\n")) % 2 == 0  # fences balanced
        assert "▍" not in part
    assert unsplit(parts, answer) == answer


async def test_model_output_can_never_ping_anyone(world: DiscordWorld) -> None:
    role = world.discord.add_role(world.guild, "Moderators")
    answer = f"@everyone @here look at this <@&{role}> and <@{world.bob.id}>!"
    interaction = await chat(world, "ping everybody", answer)
    thread = await world.discord.wait_for(lambda: world.discord.channels.get(interaction.original_id or 0))
    world.llm.enqueue(StreamReply.words(answer))
    await world.discord.send_message(thread, world.alice, "again please")
    await world.turns(2)
    writes = [
        r
        for r in world.discord.message_writes()
        if (r.json.get("content") or (r.json.get("data") or {}).get("content"))
    ]
    assert len(writes) >= 4
    for request in writes:
        body = request.json.get("data", request.json) if request.path.endswith("/callback") else request.json
        assert body.get("allowed_mentions") == SAFE_MENTIONS, (request.method, request.path, body)
    assert world.discord.original(interaction).content == answer


async def test_deleting_the_reply_stops_the_stream(world: DiscordWorld) -> None:
    interaction = await chat(world, "Hi", "Hello.")
    thread = await world.discord.wait_for(lambda: world.discord.channels.get(interaction.original_id or 0))
    world.llm.enqueue(StreamReply.words(" ".join(f"word{index}" for index in range(60)), chunk_delay=0.02))
    await world.discord.send_message(thread, world.alice, "tell me a long story")
    reply = await world.discord.wait_for(
        lambda: next((m for m in world.discord.bot_messages(thread.id) if len(m.history) >= 2), None)
    )
    reply.deleted = True  # a person deletes the bot's message: edits answer 404 Unknown Message
    [_, result] = await world.turns(2)
    assert result.status == "stopped"
    assert 404 in [
        r.status for r in world.discord.requests_to("PATCH", rf"/channels/{thread.id}/messages/{reply.id}")
    ]
    assert world.discord.bot_messages(thread.id) == []  # nothing posted after the deletion


async def test_a_429_on_an_edit_is_honoured_and_the_final_text_is_exact(world: DiscordWorld) -> None:
    world.discord.rate_limit_next("PATCH", r"/messages/@original$", retry_after=0.2)
    answer = "One two three four five six seven eight nine ten."
    interaction = await chat(world, "count", answer, chunk_delay=0.01)
    assert world.discord.original(interaction).content == answer
    statuses = [r.status for r in world.discord.requests_to("PATCH", r"/messages/@original$")]
    assert 429 in statuses and statuses[-1] == 200


async def test_a_429_without_via_header_still_ends_with_the_exact_text(world: DiscordWorld) -> None:
    # discord.py does not retry a 429 without `Via` (it looks like a Cloudflare ban): the surface
    # reports RateLimited and the core's renderer waits and sends the newest text again.
    world.discord.rate_limit_next("PATCH", r"/messages/@original$", retry_after=0.2, via=False)
    answer = "Alpha beta gamma delta epsilon zeta eta theta."
    interaction = await chat(world, "greek", answer, chunk_delay=0.01)
    assert world.discord.original(interaction).content == answer
    assert 429 in [r.status for r in world.discord.requests_to("PATCH", r"/messages/@original$")]


async def test_reset_forgets_the_thread_history(world: DiscordWorld) -> None:
    interaction = await chat(world, "My name is Alice.", "Nice to meet you, Alice.")
    thread = await world.discord.wait_for(lambda: world.discord.channels.get(interaction.original_id or 0))
    reset = await world.command(thread, world.alice, "reset")
    assert reset.responded == 4 and "reset this conversation" in (reset.response_data or {})["content"]
    world.llm.enqueue(StreamReply.words("I do not know your name."))
    await world.discord.send_message(
        thread, world.alice, f"<@{world.discord.bot.id}> what is my name?", mentions=[world.discord.bot]
    )
    await world.turns(2)
    contents = [m["content"] for m in world.llm.requests[1]["messages"]]
    assert contents[1:] == ["Alice: what is my name?"]
    assert not any("Alice." in content for content in contents[1:])
    again = await world.command(world.other_channel, world.alice, "reset")
    assert (again.response_data or {})["flags"] == 64  # nothing to forget: told privately


async def test_expired_interaction_token_continues_without_it(world: DiscordWorld) -> None:
    words = [f"w{index}" for index in range(40)]
    answer = " ".join(words)
    world.llm.enqueue(StreamReply.words(answer, chunk_delay=0.02))
    interaction = await world.command(world.channel, world.alice, "chat", prompt="long one")
    await world.discord.wait_for(
        lambda: interaction.original_id and len(world.discord.original(interaction).history) >= 3
    )
    world.discord.expire_interaction(interaction)  # as after 15 minutes: the webhook answers 401
    await world.turns(1)
    reply = world.discord.original(interaction)
    assert reply.content == answer  # finished with the bot token on the channel message
    assert 401 in [r.status for r in world.discord.requests_to("PATCH", r"/messages/@original$")]
    assert world.discord.requests_to("PATCH", rf"/channels/{world.channel.id}/messages/{reply.id}$")
    assert world.results[0].status == "complete"


async def test_token_near_expiry_is_not_used_any_more(
    world: DiscordWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bots.discord.surface as surface

    monkeypatch.setattr(surface, "INTERACTION_TOKEN_LIFETIME", surface.TOKEN_SAFETY_MARGIN + 0.3)
    answer = " ".join(f"w{index}" for index in range(40))
    interaction = await chat(world, "long one", answer, chunk_delay=0.02)
    reply = world.discord.original(interaction)
    assert reply.content == answer
    assert all(r.status == 200 for r in world.discord.requests_to("PATCH", r"/messages/@original$"))
    assert world.discord.requests_to("PATCH", rf"/channels/{world.channel.id}/messages/{reply.id}$")


async def test_expired_token_and_refused_bot_edit_post_the_rest_in_the_thread(world: DiscordWorld) -> None:
    answer = " ".join(f"w{index}" for index in range(40))
    world.llm.enqueue(StreamReply.words(answer, chunk_delay=0.02))
    interaction = await world.command(world.channel, world.alice, "chat", prompt="long one")
    await world.discord.wait_for(
        lambda: interaction.original_id and len(world.discord.original(interaction).history) >= 3
    )
    world.discord.fail_next(
        "PATCH",
        rf"/channels/{world.channel.id}/messages/\d+$",
        status=403,
        body={"message": "Cannot edit a message authored by another user", "code": 50005},
        times=100,
    )
    world.discord.expire_interaction(interaction)
    await world.turns(1)
    thread_id = interaction.original_id or 0
    [replacement] = world.discord.bot_messages(thread_id)
    assert replacement.content == answer
    assert 403 in [
        r.status for r in world.discord.requests_to("PATCH", rf"/channels/{world.channel.id}/messages/")
    ]


async def test_replies_are_timed_from_when_the_event_reached_the_bot(world: DiscordWorld) -> None:
    """Each turn starts its clock (reply latency, time to first edit) on arrival, before any REST call."""
    fake = world.discord
    world.llm.enqueue(StreamReply.words("Hi."), StreamReply.words("Hello."))
    before = time.monotonic()
    interaction = await world.command(world.channel, world.alice, "chat", prompt="Hi")
    await world.turns(1)
    [deferred] = fake.requests_to("POST", rf"^/interactions/{interaction.id}/")
    [command_turn] = world.turns_started
    assert command_turn.received_at is not None
    assert before <= command_turn.received_at <= deferred.time

    bot = fake.bot
    before = time.monotonic()
    message = await fake.send_message(world.channel, world.alice, f"<@{bot.id}> hello", mentions=[bot])
    await world.turns(2)
    [opened] = fake.requests_to("POST", rf"^/channels/{world.channel.id}/messages/{message.id}/threads$")
    mention_turn = world.turns_started[1]
    assert mention_turn.received_at is not None
    assert before <= mention_turn.received_at <= opened.time
