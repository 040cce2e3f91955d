"""`/persona list|show|use|reset|create|edit|delete` and `/persona default use|reset` (the server's
default persona): answers are ephemeral; changes need permission."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands

from bots.discord.modals import PersonaForm
from bots.discord.permissions import persona_admin
from bots.discord.replies import say
from bots.discord.routing import PLATFORM, home_channel, key_for_channel, thread_key
from core.personas.model import Persona
from core.personas.service import DefaultPersonaRequired, PersonaSource, UnknownPersona
from core.types import ConversationKey

if TYPE_CHECKING:
    from typing import TypeAlias

    from bots.discord.client import ThreadlineClient

    Interaction: TypeAlias = discord.Interaction[ThreadlineClient]
else:
    Interaction = discord.Interaction

Scope = Literal["channel", "thread", "server"]

SOURCE_TEXT = {
    PersonaSource.THREAD: "chosen for this thread",
    PersonaSource.CHANNEL: "chosen for this channel",
    PersonaSource.WORKSPACE: "the server's default",
    PersonaSource.DEFAULT: "the built-in default",
}
SCOPE_TEXT = {"channel": "This channel", "thread": "This thread", "server": "This server (by default)"}
SERVER_DEFAULT_SET = (
    "✅ **{name}** is now this server's default persona: channels and threads without their own choice "
    "talk to it."
)
SERVER_DEFAULT_RESET = (
    "This server is back to the built-in default persona; channels and threads with their own choice keep it."
)


def describe(persona: Persona) -> str:
    def shown(value: object) -> str:
        return "—" if value is None else f"`{value}`"

    lines = [
        f"**{persona.name}**" + (f" — {persona.description}" if persona.description else ""),
        f"Model {shown(persona.model)} · temperature {shown(persona.temperature)}"
        f" · top p {shown(persona.top_p)} · max tokens {shown(persona.max_tokens)}"
        f" · format {shown(persona.response_format)} · context window {shown(persona.context_window)}"
        f" · history limit {shown(persona.history_limit)}",
        "System prompt:",
        *(f"> {line}" for line in persona.system_prompt.splitlines()),
    ]
    return "\n".join(lines)


class PersonaCommands(app_commands.Group):
    default = app_commands.Group(
        name="default", description="The persona of the whole server, for channels without their own"
    )

    def __init__(self) -> None:
        super().__init__(name="persona", description="Choose and manage the personas the bot talks as")

    @app_commands.command(name="list", description="List the personas")
    async def list_personas(self, interaction: Interaction) -> None:
        core = interaction.client.core
        current = (await core.personas.resolve(_key(interaction))).persona.name
        lines = ["**Personas** (▶ = answering here):"]
        for persona in await core.personas.list():
            marker = "▶" if persona.name == current else "•"
            about = f" — {persona.description}" if persona.description else ""
            lines.append(f"{marker} `{persona.name}`{about} (model `{persona.model}`)")
        await say(interaction, "\n".join(lines))

    @app_commands.command(name="show", description="Show the persona answering here, or the one named")
    @app_commands.describe(name="A persona's name (empty: the one answering here)")
    async def show(self, interaction: Interaction, name: str | None = None) -> None:
        core = interaction.client.core
        if name:
            persona = await core.personas.get(name)
            if persona is None:
                await say(interaction, f"There is no persona named '{name}'.")
                return
            await say(interaction, describe(persona))
            return
        resolved = await core.personas.resolve(_key(interaction))
        await say(
            interaction, f"Answering here: {SOURCE_TEXT[resolved.source]}.\n{describe(resolved.persona)}"
        )

    @app_commands.command(
        name="use", description="Make this channel (or thread, or server) talk to a persona"
    )
    @app_commands.describe(
        name="The persona", scope="Where it applies (default: this channel, or this thread)"
    )
    @persona_admin
    async def use(self, interaction: Interaction, name: str, scope: Scope | None = None) -> None:
        await _set(interaction, name, scope)

    @app_commands.command(name="reset", description="Go back to the server's or the built-in default persona")
    @app_commands.describe(scope="Which choice to remove (default: this channel's, or this thread's)")
    @persona_admin
    async def reset(self, interaction: Interaction, scope: Scope | None = None) -> None:
        await _set(interaction, None, scope)

    @app_commands.command(name="create", description="Create a persona (a form opens)")
    @persona_admin
    async def create(self, interaction: Interaction) -> None:
        await interaction.response.send_modal(PersonaForm(1, None, {}))

    @app_commands.command(name="edit", description="Edit a persona (a form opens)")
    @app_commands.describe(name="The persona to edit")
    @persona_admin
    async def edit(self, interaction: Interaction, name: str) -> None:
        persona = await interaction.client.core.personas.get(name)
        if persona is None:
            await say(interaction, f"There is no persona named '{name}'.")
            return
        await interaction.response.send_modal(PersonaForm(1, persona.name, persona.to_fields()))

    @app_commands.command(name="delete", description="Delete a persona (channels using it fall back)")
    @app_commands.describe(name="The persona to delete")
    @persona_admin
    async def delete(self, interaction: Interaction, name: str) -> None:
        try:
            await interaction.client.core.personas.delete(name)
        except (UnknownPersona, DefaultPersonaRequired) as exc:
            await say(interaction, str(exc))
            return
        await say(
            interaction, f"🗑️ Deleted persona **{name}**; channels that used it fall back to the default."
        )

    @default.command(name="use", description="Make a persona the server's default")
    @app_commands.describe(name="The persona channels and threads without their own choice talk to")
    @persona_admin
    async def default_use(self, interaction: Interaction, name: str) -> None:
        await _set(interaction, name, "server")

    @default.command(name="reset", description="Back to the built-in default persona for the server")
    @persona_admin
    async def default_reset(self, interaction: Interaction) -> None:
        await _set(interaction, None, "server")

    @show.autocomplete("name")
    @use.autocomplete("name")
    @edit.autocomplete("name")
    @delete.autocomplete("name")
    @default_use.autocomplete("name")
    async def persona_names(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await persona_choices(interaction, current)


async def persona_choices(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
    needle = current.strip().lower()
    choices = []
    for persona in await interaction.client.core.personas.list():
        label = persona.name + (f" — {persona.description}" if persona.description else "")
        if needle in label.lower():
            choices.append(app_commands.Choice(name=label[:100], value=persona.name))
    return choices[:25]


def _key(interaction: Interaction) -> ConversationKey:
    return key_for_channel(interaction.channel, interaction.guild_id, interaction.channel_id or 0)


async def _set(interaction: Interaction, name: str | None, scope: Scope | None) -> None:
    core = interaction.client.core
    channel = interaction.channel
    guild_id = interaction.guild_id
    if guild_id is None or interaction.channel_id is None:
        await say(interaction, "Personas are chosen in a server's channels.")
        return
    chosen: Scope = scope or ("thread" if isinstance(channel, discord.Thread) else "channel")
    try:
        if chosen == "thread":
            if not isinstance(channel, discord.Thread):
                await say(interaction, "Use `scope: thread` inside a thread.")
                return
            await core.personas.set_thread(thread_key(channel), name)
        elif chosen == "channel":
            target = home_channel(channel, interaction.channel_id)
            await core.personas.set_channel(PLATFORM, str(guild_id), str(target), name)
        else:
            await core.personas.set_workspace_default(PLATFORM, str(guild_id), name)
    except UnknownPersona as exc:
        await say(interaction, f"{exc} `/persona list` shows them.")
        return
    if chosen == "server":
        await say(interaction, SERVER_DEFAULT_SET.format(name=name) if name else SERVER_DEFAULT_RESET)
    elif name is None:
        await say(interaction, f"{SCOPE_TEXT[chosen]} is back to the default persona.")
    else:
        await say(interaction, f"✅ {SCOPE_TEXT[chosen]} now talks to **{name}**.")
