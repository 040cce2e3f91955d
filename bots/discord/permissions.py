"""Who may change personas, channel settings and schedules: Manage Channels in that channel, or a
THREADLINE_ADMINS user.

`default_permissions` on the commands only hides them by default (server admins can override it),
so the bot checks again on every invocation, modal submit and button click.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands

if TYPE_CHECKING:
    from bots.discord.client import ThreadlineClient

T = TypeVar("T")


def refusal(action: str) -> str:
    return (
        f"🔒 {action} needs the **Manage Channels** permission in this channel "
        "(or being listed in `THREADLINE_ADMINS`). Ask a moderator."
    )


REFUSAL = refusal("Changing personas")
SETTINGS_REFUSAL = refusal("Changing this channel's settings")
SCHEDULE_REFUSAL = refusal("Adding or removing schedules")


class NotAllowed(app_commands.CheckFailure):
    """Shown to the person as it is (see `report_command_error`)."""


def may_manage(interaction: discord.Interaction[ThreadlineClient]) -> bool:
    permissions = interaction.permissions
    if permissions.administrator or permissions.manage_channels:
        return True
    return interaction.client.settings.is_admin(str(interaction.user.id))


def admin_only(message: str) -> Callable[[T], T]:
    """A command check: Manage Channels or THREADLINE_ADMINS, else `message` (ephemeral)."""

    async def check(interaction: discord.Interaction[Any]) -> bool:
        if not may_manage(interaction):
            raise NotAllowed(message)
        return True

    return app_commands.check(check)


persona_admin = admin_only(REFUSAL)
"""Decorator for commands that change personas."""

schedule_admin = admin_only(SCHEDULE_REFUSAL)
"""Decorator for commands that add or remove scheduled prompts."""
