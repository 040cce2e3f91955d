"""Ephemeral answers (settings, refusals, errors) whether or not the interaction was answered yet."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bots.discord.surface import NO_PINGS

if TYPE_CHECKING:
    from bots.discord.client import ThreadlineClient

log = logging.getLogger("threadline.discord.commands")

MAX_REPLY = 2000


def clip(text: str, limit: int = MAX_REPLY) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def say(
    interaction: discord.Interaction[Any], text: str, *, view: discord.ui.View | None = None
) -> None:
    """An ephemeral message only the person who acted sees."""
    text = clip(text)
    if interaction.response.is_done():
        if view is None:
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
        else:
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS, view=view)
    elif view is None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)
    else:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS, view=view)


async def report_command_error(
    interaction: discord.Interaction[ThreadlineClient], error: app_commands.AppCommandError
) -> None:
    if isinstance(error, app_commands.CheckFailure):
        message = str(error) or "You cannot use this command here."
    else:
        error_id = secrets.token_hex(4)
        name = interaction.command.qualified_name if interaction.command else "?"
        log.error("/%s failed (error id %s)", name, error_id, exc_info=error)
        message = f"⚠️ Something went wrong on our side (error id {error_id})."
    try:
        await say(interaction, message)
    except discord.HTTPException as exc:
        log.warning("could not tell the user about a command error (%s, code %s)", exc.status, exc.code)
