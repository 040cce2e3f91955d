"""Messages: a mention starts or continues a conversation; a thread the bot talks in is followed.

Mention in a channel  → a new thread from that message (or an inline reply, per channel setting).
Message in a thread   → continues the thread's conversation when the bot is mentioned, or without a
                        mention when the bot already talks there and the message-content intent is on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from bots.discord.routing import (
    PLATFORM,
    channel_key,
    clean_text,
    display_name,
    mentions_bot,
    started_thread_key,
    thread_key,
    thread_name,
)
from bots.discord.surface import NO_PINGS, ChannelSurface
from core.engine import Turn
from core.types import Author, ConversationKey

if TYPE_CHECKING:
    from discord.abc import MessageableChannel

    from bots.discord.client import ThreadlineClient

log = logging.getLogger("threadline.discord.messages")

_CONVERSATION_TYPES = (discord.MessageType.default, discord.MessageType.reply)
EMPTY_MENTION_HINT = "Hi! Mention me with a question, or use `/chat` to start a conversation."


async def handle_message(client: ThreadlineClient, message: discord.Message, received_at: float) -> None:
    """`received_at`: time.monotonic() when the message reached the bot (replies are timed from it)."""
    me = client.user
    if me is None or message.author.id == me.id or message.guild is None:
        return  # DMs are not served: conversations live in a server's channels and threads
    if message.type not in _CONVERSATION_TYPES:
        return
    channel: MessageableChannel | None = message.channel
    if isinstance(channel, discord.PartialMessageable):  # a thread not in the cache yet
        channel = await _fetch_channel(client, channel.id)
    mentioned = mentions_bot(message, me)
    in_thread = isinstance(channel, discord.Thread)
    if not mentioned and (not in_thread or not message.content):  # empty: no message-content intent
        return
    if isinstance(channel, discord.Thread):
        parent_id = channel.parent_id
    elif isinstance(channel, discord.TextChannel | discord.VoiceChannel):
        parent_id = channel.id
    else:
        return
    settings = await client.core.channels.get(PLATFORM, str(message.guild.id), str(parent_id))
    if (message.author.bot or message.webhook_id) and not settings.allow_bots:
        return
    text = clean_text(message, me.id)
    if isinstance(channel, discord.Thread):
        key = thread_key(channel)
        if not mentioned and not (
            settings.follow_up_in_threads and await client.core.engine.has_conversation(key)
        ):
            return  # a thread where the bot does not talk (or follow-ups are off there)
        if not await client.core.events.claim(PLATFORM, str(message.id)):
            return  # already answered (a replay after a gateway RESUME)
        surface = ChannelSurface(channel, edit_interval=client.settings.discord_edit_interval)
    else:
        if not await client.core.events.claim(PLATFORM, str(message.id)):
            return
        key, surface = await _mention_destination(client, message, channel, text, settings.reply_in_thread)
    if not text:
        await _hint(surface)
        return
    await _answer(client, message, key, text, surface, received_at)


async def _mention_destination(
    client: ThreadlineClient,
    message: discord.Message,
    channel: discord.TextChannel | discord.VoiceChannel,
    text: str,
    in_thread: bool,
) -> tuple[ConversationKey, ChannelSurface]:
    """A mention in a channel: a new thread from the message, or an inline reply to it."""
    interval = client.settings.discord_edit_interval
    guild_id = channel.guild.id
    if in_thread and isinstance(channel, discord.TextChannel):
        thread = await _open_thread(message, text)
        if thread is not None:
            return started_thread_key(guild_id, channel.id, message.id), ChannelSurface(
                thread, edit_interval=interval
            )
    return channel_key(channel.id, guild_id), ChannelSurface(
        channel, edit_interval=interval, reply_to=message
    )


async def _open_thread(message: discord.Message, text: str) -> discord.Thread | None:
    try:
        return await message.create_thread(name=thread_name(text))
    except discord.HTTPException as exc:
        log.warning(
            "cannot open a thread on message %s in channel %s (%s, code %s); answering inline",
            message.id,
            message.channel.id,
            exc.status,
            exc.code,
        )
        return None


async def _fetch_channel(
    client: ThreadlineClient, channel_id: int
) -> discord.Thread | discord.TextChannel | None:
    try:
        channel = await client.fetch_channel(channel_id)
    except discord.HTTPException:
        return None
    return channel if isinstance(channel, discord.Thread | discord.TextChannel) else None


async def _hint(surface: ChannelSurface) -> None:
    try:
        await surface.target.send(EMPTY_MENTION_HINT, allowed_mentions=NO_PINGS)
    except discord.HTTPException as exc:
        log.info("could not post the usage hint (%s)", exc.status)


async def _answer(
    client: ThreadlineClient,
    message: discord.Message,
    key: ConversationKey,
    text: str,
    surface: ChannelSurface,
    received_at: float,
) -> None:
    author = Author(str(message.author.id), display_name(message.author))
    turn = Turn(
        key=key, author=author, text=text, platform_message_id=str(message.id), received_at=received_at
    )
    result = await client.core.engine.handle_turn(turn, surface)
    log.debug("answered %s in %s: %s", message.id, key.describe(), result.status)
