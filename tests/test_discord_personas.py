"""Discord end to end: /persona commands, permissions, modals, per-channel personas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bots.discord.personas import SERVER_DEFAULT_RESET, SERVER_DEFAULT_SET
from core.personas.model import Persona
from core.personas.service import PersonaSource
from core.types import ConversationKey
from tests.discord_harness import MODERATOR, DiscordWorld, discord_world
from tests.fakes.discord_server import FakeInteraction
from tests.fakes.openai_server import StreamReply

PIRATE = Persona(
    name="pirate", description="Talks like a pirate", system_prompt="You are a pirate.", model="gpt-4o"
)


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordWorld]:
    async with discord_world(tmp_path, monkeypatch, admins=["4242"]) as created:
        await created.core.personas.create(PIRATE)
        yield created


def said(interaction: FakeInteraction) -> str:
    """The text of an ephemeral answer (asserting it is one)."""
    data = interaction.response_data or {}
    assert interaction.responded == 4 and data.get("flags") == 64, (interaction.responded, data)
    return str(data["content"])


def buttons(world: DiscordWorld, interaction: FakeInteraction) -> dict[str, str]:
    message = world.discord.original(interaction)
    return {c["label"]: c["custom_id"] for row in message.components for c in row["components"]}


def modal_values(modal: dict[str, Any]) -> dict[str, str]:
    return {c["component"]["custom_id"]: c["component"].get("value") or "" for c in modal["components"]}


def key(world: DiscordWorld, channel_id: int) -> ConversationKey:
    return ConversationKey("discord", str(world.guild.id), str(channel_id), str(channel_id))


async def test_persona_use_needs_manage_channels(world: DiscordWorld) -> None:
    refused = await world.command(world.channel, world.alice, "persona", sub="use", name="pirate")
    assert "Manage Channels" in said(refused)
    resolved = await world.core.personas.resolve(key(world, world.channel.id))
    assert resolved.source is PersonaSource.DEFAULT

    allowed = await world.command(
        world.channel, world.alice, "persona", sub="use", name="pirate", permissions=MODERATOR
    )
    assert "now talks to **pirate**" in said(allowed)
    # The next reply in this channel uses the pirate persona: its system prompt and its model.
    world.llm.enqueue(StreamReply.words("Arr, matey!"))
    chat = await world.command(world.channel, world.bob, "chat", prompt="Hello")
    await world.turns(1)
    request = world.llm.requests[0]
    assert request["model"] == "gpt-4o"
    assert request["messages"][0] == {"role": "system", "content": "You are a pirate."}
    assert world.discord.original(chat).content == "Arr, matey!"


async def test_threadline_admins_may_change_personas_without_the_permission(world: DiscordWorld) -> None:
    admin = world.discord.user("Admin")
    admin.id = 4242
    answer = await world.command(world.channel, admin, "persona", sub="use", name="pirate", scope="server")
    assert said(answer) == SERVER_DEFAULT_SET.format(name="pirate")
    resolved = await world.core.personas.resolve(key(world, world.other_channel.id))
    assert resolved.persona.name == "pirate" and resolved.source is PersonaSource.WORKSPACE


async def test_two_channels_with_different_personas_never_share_history(world: DiscordWorld) -> None:
    await world.command(
        world.channel, world.alice, "persona", sub="use", name="pirate", permissions=MODERATOR
    )
    world.llm.enqueue(
        StreamReply.words("Arr, the treasure is buried."), StreamReply.words("The report is done.")
    )
    first = await world.command(world.channel, world.alice, "chat", prompt="Where is the secret treasure?")
    await world.turns(1)
    await world.command(world.other_channel, world.bob, "chat", prompt="Status of the quarterly report?")
    await world.turns(2)
    general, other = world.llm.requests
    assert general["messages"][0]["content"] == "You are a pirate." and general["model"] == "gpt-4o"
    assert other["messages"][0]["content"] != "You are a pirate."
    assert [m["content"] for m in other["messages"][1:]] == ["Bob: Status of the quarterly report?"]

    thread = await world.discord.wait_for(lambda: world.discord.channels.get(first.original_id or 0))
    world.llm.enqueue(StreamReply.words("Still buried."))
    await world.discord.send_message(thread, world.alice, "Still there?")
    await world.turns(3)
    follow_up = world.llm.requests[2]
    assert follow_up["messages"][0]["content"] == "You are a pirate."
    assert not any(
        "quarterly" in m["content"] or "report is done" in m["content"] for m in follow_up["messages"]
    )


async def test_persona_list_show_and_autocomplete(world: DiscordWorld) -> None:
    listing = said(await world.command(world.channel, world.alice, "persona", sub="list"))
    assert "▶ `assistant`" in listing and "• `pirate` — Talks like a pirate" in listing
    shown = said(await world.command(world.channel, world.alice, "persona", sub="show"))
    assert shown.startswith("Answering here: the built-in default.") and "**assistant**" in shown
    shown = said(await world.command(world.channel, world.alice, "persona", sub="show", name="pirate"))
    assert "> You are a pirate." in shown and "`gpt-4o`" in shown
    options = [
        {"name": "use", "type": 1, "options": [{"name": "name", "type": 3, "value": "pir", "focused": True}]}
    ]
    completion = await world.discord.autocomplete(world.channel, world.alice, "persona", options)
    await world.discord.wait_response(completion)
    assert completion.responded == 8
    assert completion.choices == [{"name": "pirate — Talks like a pirate", "value": "pirate"}]


async def test_persona_create_shows_validation_errors_and_keeps_what_was_typed(world: DiscordWorld) -> None:
    opened = await world.command(world.channel, world.alice, "persona", sub="create", permissions=MODERATOR)
    assert opened.modal is not None and opened.modal["title"] == "New persona (1/2)"
    assert set(modal_values(opened.modal)) == {"name", "description", "system_prompt", "model", "temperature"}
    typed = {
        "name": "poet",
        "description": "Rhymes",
        "system_prompt": "You answer in verse.",
        "model": "gpt-4o-mini",
        "temperature": "5",
    }
    rejected = await world.discord.submit_modal(
        world.channel, world.alice, opened.modal, typed, permissions=MODERATOR
    )
    await world.discord.wait_response(rejected)
    text = said(rejected)
    assert "**Temperature**: temperature must be a number between 0 and 2" in text
    assert await world.core.personas.get("poet") is None

    # "Fix it" reopens the form with exactly what was typed.
    fix = await world.discord.click(
        world.discord.original(rejected),
        world.alice,
        buttons(world, rejected)["Fix it"],
        permissions=MODERATOR,
    )
    await world.discord.wait_response(fix)
    assert fix.modal is not None and modal_values(fix.modal) == typed
    saved = await world.discord.submit_modal(
        world.channel, world.alice, fix.modal, {"temperature": "0.7"}, permissions=MODERATOR
    )
    await world.discord.wait_response(saved)
    assert "Created persona **poet**" in said(saved)
    poet = await world.core.personas.get("poet")
    assert poet is not None and poet.temperature == 0.7 and poet.system_prompt == "You answer in verse."

    # Step two: the other five fields.
    more = await world.discord.click(
        world.discord.original(saved),
        world.alice,
        buttons(world, saved)["More settings…"],
        permissions=MODERATOR,
    )
    await world.discord.wait_response(more)
    assert more.modal is not None and more.modal["title"] == "Edit poet (2/2)"
    assert set(modal_values(more.modal)) == {
        "top_p",
        "max_tokens",
        "response_format",
        "context_window",
        "history_limit",
    }
    done = await world.discord.submit_modal(
        world.channel,
        world.alice,
        more.modal,
        {"max_tokens": "300", "response_format": "json_object"},
        permissions=MODERATOR,
    )
    await world.discord.wait_response(done)
    assert "Saved persona **poet**" in said(done)
    poet = await world.core.personas.get("poet")
    assert poet is not None and poet.max_tokens == 300 and poet.json_mode and poet.temperature == 0.7


async def test_persona_edit_is_prefilled_and_checked_again_on_submit(world: DiscordWorld) -> None:
    opened = await world.command(
        world.channel, world.alice, "persona", sub="edit", name="pirate", permissions=MODERATOR
    )
    assert opened.modal is not None
    assert modal_values(opened.modal) == {
        "name": "pirate",
        "description": "Talks like a pirate",
        "system_prompt": "You are a pirate.",
        "model": "gpt-4o",
        "temperature": "",
    }
    # The permission is checked again on submit (it may have been taken away meanwhile).
    refused = await world.discord.submit_modal(world.channel, world.alice, opened.modal, {"model": "gpt-x"})
    await world.discord.wait_response(refused)
    assert "Manage Channels" in said(refused)
    assert (await world.core.personas.get("pirate")) == PIRATE
    again = await world.command(
        world.channel, world.alice, "persona", sub="edit", name="pirate", permissions=MODERATOR
    )
    assert again.modal is not None
    renamed = await world.discord.submit_modal(
        world.channel, world.alice, again.modal, {"name": "captain"}, permissions=MODERATOR
    )
    await world.discord.wait_response(renamed)
    assert "Saved persona **captain**" in said(renamed)
    assert await world.core.personas.get("pirate") is None


async def test_persona_delete_and_reset(world: DiscordWorld) -> None:
    await world.command(
        world.channel, world.alice, "persona", sub="use", name="pirate", permissions=MODERATOR
    )
    reset = await world.command(world.channel, world.alice, "persona", sub="reset", permissions=MODERATOR)
    assert "back to the default persona" in said(reset)
    assert (await world.core.personas.resolve(key(world, world.channel.id))).source is PersonaSource.DEFAULT
    refused = await world.command(world.channel, world.alice, "persona", sub="delete", name="pirate")
    assert "Manage Channels" in said(refused)
    deleted = await world.command(
        world.channel, world.alice, "persona", sub="delete", name="pirate", permissions=MODERATOR
    )
    assert "Deleted persona **pirate**" in said(deleted)
    missing = await world.command(
        world.channel, world.alice, "persona", sub="delete", name="pirate", permissions=MODERATOR
    )
    assert "There is no persona named 'pirate'." in said(missing)
    default = await world.command(
        world.channel, world.alice, "persona", sub="delete", name="assistant", permissions=MODERATOR
    )
    assert "cannot be deleted" in said(default)


async def test_persona_default_sets_and_resets_the_server_default(world: DiscordWorld) -> None:
    refused = await world.command(world.channel, world.alice, "persona", sub="default use", name="pirate")
    assert "Manage Channels" in said(refused)
    assert (
        await world.core.personas.resolve(key(world, world.other_channel.id))
    ).source is PersonaSource.DEFAULT

    chosen = await world.command(
        world.channel, world.alice, "persona", sub="default use", name="pirate", permissions=MODERATOR
    )
    assert said(chosen) == SERVER_DEFAULT_SET.format(name="pirate")
    resolved = await world.core.personas.resolve(key(world, world.other_channel.id))
    assert resolved.persona.name == "pirate" and resolved.source is PersonaSource.WORKSPACE
    # A channel with its own choice keeps it.
    await world.command(
        world.channel, world.alice, "persona", sub="use", name="assistant", permissions=MODERATOR
    )
    assert (await world.core.personas.resolve(key(world, world.channel.id))).persona.name == "assistant"

    unknown = await world.command(
        world.channel, world.alice, "persona", sub="default use", name="ghost", permissions=MODERATOR
    )
    assert "`/persona list` shows them." in said(unknown)
    options = [
        {
            "name": "default",
            "type": 2,
            "options": [
                {
                    "name": "use",
                    "type": 1,
                    "options": [{"name": "name", "type": 3, "value": "pi", "focused": True}],
                }
            ],
        }
    ]
    completion = await world.discord.autocomplete(world.channel, world.alice, "persona", options)
    await world.discord.wait_response(completion)
    assert completion.choices == [{"name": "pirate — Talks like a pirate", "value": "pirate"}]

    reset = await world.command(
        world.channel, world.alice, "persona", sub="default reset", permissions=MODERATOR
    )
    assert said(reset) == SERVER_DEFAULT_RESET
    resolved = await world.core.personas.resolve(key(world, world.other_channel.id))
    assert resolved.source is PersonaSource.DEFAULT
    world.llm.enqueue(StreamReply.words("Hello."))
    await world.command(world.other_channel, world.bob, "chat", prompt="Hi")
    await world.turns(1)
    assert world.llm.requests[0]["messages"][0]["content"] != "You are a pirate."
