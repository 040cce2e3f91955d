"""The slash commands: `/chat`, `/reset`, `/usage`, `/settings` and the `/persona` and `/schedule` groups."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bots.discord.channel_settings import run_settings
from bots.discord.chat import run_chat, run_reset
from bots.discord.personas import PersonaCommands
from bots.discord.schedules import ScheduleCommands
from bots.discord.usage import run_usage

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
        await run_chat(interaction, prompt, received_at=time.monotonic())

    @app_commands.command(name="reset", description="Forget this thread's conversation and start afresh")
    async def reset(interaction: discord.Interaction[ThreadlineClient]) -> None:
        await run_reset(interaction)

    @app_commands.command(name="usage", description="Tokens and estimated cost: this channel and you")
    async def usage(interaction: discord.Interaction[ThreadlineClient]) -> None:
        await run_usage(interaction)

    @app_commands.command(
        name="settings", description="Show (no option) or change how the bot behaves in this channel"
    )
    @app_commands.describe(
        reply_in_thread="Answer a mention in a new thread (True) or inline in the channel (False)",
        follow_up_in_threads="Answer later messages in the bot's threads without a mention",
        allow_bots="Answer other bots' messages too",
    )
    async def settings(
        interaction: discord.Interaction[ThreadlineClient],
        reply_in_thread: bool | None = None,
        follow_up_in_threads: bool | None = None,
        allow_bots: bool | None = None,
    ) -> None:
        await run_settings(
            interaction,
            reply_in_thread=reply_in_thread,
            follow_up_in_threads=follow_up_in_threads,
            allow_bots=allow_bots,
        )

    tree.add_command(chat)
    tree.add_command(reset)
    tree.add_command(usage)
    tree.add_command(settings)
    tree.add_command(PersonaCommands())
    tree.add_command(ScheduleCommands())
