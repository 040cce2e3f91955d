"""The bot's invite link: the least it needs, never Administrator or Mention Everyone."""

from __future__ import annotations

import discord

SCOPES = ("bot", "applications.commands")


def bot_permissions() -> discord.Permissions:
    """Read the channel, answer in it, open and write in public threads."""
    return discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        create_public_threads=True,
        read_message_history=True,
    )


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=bot_permissions(), scopes=SCOPES)
