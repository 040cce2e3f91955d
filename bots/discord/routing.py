"""Where a Discord conversation lives, and how a person's message reads to the model."""

from __future__ import annotations

import re
from typing import Any

import discord

from core.types import ConversationKey

PLATFORM = "discord"
THREAD_NAME_LIMIT = 100

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")


def thread_key(thread: discord.Thread) -> ConversationKey:
    """A thread is one conversation: (guild, parent channel, thread)."""
    return ConversationKey(PLATFORM, str(thread.guild.id), str(thread.parent_id), str(thread.id))


def started_thread_key(guild_id: int, channel_id: int, starter_message_id: int) -> ConversationKey:
    """The conversation of a thread opened from a message (thread id == starter message id)."""
    return ConversationKey(PLATFORM, str(guild_id), str(channel_id), str(starter_message_id))


def channel_key(channel_id: int, guild_id: int | None) -> ConversationKey:
    """A channel's own (inline) conversation: replies outside threads, DMs."""
    return ConversationKey(PLATFORM, str(guild_id or ""), str(channel_id), str(channel_id))


def key_for_channel(channel: object, guild_id: int | None, channel_id: int) -> ConversationKey:
    """The conversation a command run in `channel` belongs to."""
    if isinstance(channel, discord.Thread):
        return thread_key(channel)
    return channel_key(channel_id, guild_id)


def home_channel(channel: object, channel_id: int) -> int:
    """The channel a command run in `channel` is about: a thread's parent, else the channel itself.

    Channel settings, the channel's persona, schedules and usage belong to it, as the conversation
    keys of its threads do: (guild, parent channel, thread).
    """
    if isinstance(channel, discord.Thread) and channel.parent_id:
        return channel.parent_id
    return channel_id


def command_scope(interaction: discord.Interaction[Any]) -> tuple[str, str] | None:
    """(guild id, home channel id) of a command, or None outside a server's channels."""
    if interaction.guild_id is None or interaction.channel_id is None:
        return None
    return str(interaction.guild_id), str(home_channel(interaction.channel, interaction.channel_id))


def mentions_bot(message: discord.Message, bot: discord.abc.User) -> bool:
    """The bot itself, or its managed integration role, is mentioned (not @everyone/@here)."""
    if any(user.id == bot.id for user in message.mentions):
        return True
    return any(role.tags is not None and role.tags.bot_id == bot.id for role in message.role_mentions)


def clean_text(message: discord.Message, bot_id: int) -> str:
    """The message as the model should read it: no bot mention, people and roles by name."""
    guild = message.guild
    users = {user.id: user for user in message.mentions}
    roles = {role.id: role for role in message.role_mentions}

    def user(match: re.Match[str]) -> str:
        user_id = int(match.group(1))
        if user_id == bot_id:
            return ""
        found = users.get(user_id) or (guild.get_member(user_id) if guild else None)
        return f"@{found.display_name}" if found else "@someone"

    def role(match: re.Match[str]) -> str:
        role_id = int(match.group(1))
        found = roles.get(role_id) or (guild.get_role(role_id) if guild else None)
        if found is not None and found.tags is not None and found.tags.bot_id == bot_id:
            return ""
        return f"@{found.name}" if found else "@role"

    def channel(match: re.Match[str]) -> str:
        found = guild.get_channel_or_thread(int(match.group(1))) if guild else None
        return f"#{found.name}" if found else "#channel"

    text = _USER_MENTION.sub(user, message.content)
    text = _ROLE_MENTION.sub(role, text)
    text = _CHANNEL_MENTION.sub(channel, text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def thread_name(text: str, fallback: str = "Conversation") -> str:
    """A thread title from the first line of the prompt (Discord allows 1–100 characters)."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = re.sub(r"\s+", " ", first)
    if not first:
        return fallback
    if len(first) > THREAD_NAME_LIMIT:
        first = first[: THREAD_NAME_LIMIT - 1].rstrip() + "…"
    return first


def display_name(user: discord.abc.User) -> str:
    return user.display_name or user.name
