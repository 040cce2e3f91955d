"""`/usage`: tokens and estimated cost of this channel and of the person asking (ephemeral, open to all)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bots.discord.replies import say
from bots.discord.routing import PLATFORM, command_scope

if TYPE_CHECKING:
    from bots.discord.client import ThreadlineClient

OUTSIDE_SERVER = "Usage is counted per server channel: run `/usage` in one."


async def run_usage(interaction: discord.Interaction[ThreadlineClient]) -> None:
    scope = command_scope(interaction)
    if scope is None:
        await say(interaction, OUTSIDE_SERVER)
        return
    # The totals read a month of rows: acknowledge first (Discord allows 3 s), privately.
    await interaction.response.defer(ephemeral=True, thinking=True)
    guild, channel = scope
    report = await interaction.client.core.usage.report(PLATFORM, guild, channel, str(interaction.user.id))
    await say(interaction, report)  # standard Markdown, which Discord renders as it is
