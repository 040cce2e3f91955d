"""Who may change personas: Manage Channels in that channel, or a THREADLINE_ADMINS user.

`default_permissions` on the commands only hides them by default (server admins can override it),
so the bot checks again on every invocation, modal submit and button click.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

if TYPE_CHECKING:
    from bots.discord.client import ThreadlineClient

REFUSAL = (
    "🔒 Changing personas needs the **Manage Channels** permission in this channel "
    "(or being listed in `THREADLINE_ADMINS`). Ask a moderator."
)


class NotPersonaAdmin(app_commands.CheckFailure):
    def __init__(self) -> None:
        super().__init__(REFUSAL)


def may_change_personas(interaction: discord.Interaction[ThreadlineClient]) -> bool:
    permissions = interaction.permissions
    if permissions.administrator or permissions.manage_channels:
        return True
    return interaction.client.settings.is_admin(str(interaction.user.id))


async def _check(interaction: discord.Interaction[Any]) -> bool:
    if not may_change_personas(interaction):
        raise NotPersonaAdmin()
    return True


persona_admin = app_commands.check(_check)
"""Decorator for commands that change personas."""
