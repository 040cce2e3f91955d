"""The slash commands: `/chat`, `/reset` and the `/persona` group."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bots.discord.chat import run_chat, run_reset
from bots.discord.personas import PersonaCommands

if TYPE_CHECKING:
    from bots.discord.client import ThreadlineClient

PROMPT_MAX = 4000


def register_commands(tree: app_commands.CommandTree[ThreadlineClient]) -> None:
    """Add fresh command objects to `tree` (each client gets its own)."""

    @app_commands.command(
        name="chat", description="Talk to this channel's persona; the conversation goes on in a thread"
    )
    @app_commands.describe(prompt="What you want to ask or say")
    async def chat(
        interaction: discord.Interaction[ThreadlineClient],
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
    ) -> None:
        await run_chat(interaction, prompt)

    @app_commands.command(name="reset", description="Forget this thread's conversation and start afresh")
    async def reset(interaction: discord.Interaction[ThreadlineClient]) -> None:
        await run_reset(interaction)

    tree.add_command(chat)
    tree.add_command(reset)
    tree.add_command(PersonaCommands())
