"""`/chat` and `/reset`: a conversation per thread, started from a slash command's reply."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord

from bots.discord.routing import (
    channel_key,
    display_name,
    key_for_channel,
    started_thread_key,
    thread_key,
    thread_name,
)
from bots.discord.surface import (
    NO_PINGS,
    ChannelSurface,
    ContinuationFactory,
    InteractionSurface,
    MessageTarget,
)
from core.engine import Turn
from core.types import Author, ConversationKey

if TYPE_CHECKING:
    from bots.discord.client import ThreadlineClient

log = logging.getLogger("threadline.discord.chat")

THREAD_ALREADY_EXISTS = 160004


class ThreadOpener:
    """Opens the conversation's thread from the reply message once, when first needed.

    Continuation parts of a long reply go into it; if Discord refuses the thread (permissions,
    channel type), the reply continues in the channel and the refusal is logged.
    """

    def __init__(
        self, client: ThreadlineClient, channel: discord.TextChannel, starter_id: int, name: str
    ) -> None:
        self._client = client
        self._channel = channel
        self._starter_id = starter_id
        self._name = name
        self._surface: ChannelSurface | None = None
        self._lock = asyncio.Lock()

    async def surface(self) -> ChannelSurface:
        async with self._lock:
            if self._surface is None:
                target: MessageTarget = await self._open() or self._channel
                self._surface = ChannelSurface(
                    target, edit_interval=self._client.settings.discord_edit_interval
                )
            return self._surface

    async def _open(self) -> discord.Thread | None:
        starter = self._channel.get_partial_message(self._starter_id)
        try:
            return await starter.create_thread(name=self._name)
        except discord.HTTPException as exc:
            if exc.code == THREAD_ALREADY_EXISTS:
                existing = self._channel.guild.get_thread(self._starter_id)
                if existing is not None:
                    return existing
            log.warning(
                "cannot open a thread on reply %s in channel %s (%s, code %s): "
                "the conversation cannot continue there; check Create Public Threads",
                self._starter_id,
                self._channel.id,
                exc.status,
                exc.code,
            )
            return None


async def run_chat(
    interaction: discord.Interaction[ThreadlineClient], prompt: str, received_at: float
) -> None:
    """`received_at`: time.monotonic() when the command reached the bot (replies are timed from it)."""
    try:
        callback = await interaction.response.defer(thinking=True)  # within Discord's 3 s
    except discord.HTTPException as exc:
        log.warning(
            "could not acknowledge /chat %s in time (%s, code %s)", interaction.id, exc.status, exc.code
        )
        return
    client = interaction.client
    interval = client.settings.discord_edit_interval
    channel = interaction.channel
    author = Author(str(interaction.user.id), display_name(interaction.user))
    if isinstance(channel, discord.Thread):
        in_thread = ChannelSurface(channel, edit_interval=interval)
        await _turn(interaction, thread_key(channel), author, prompt, received_at, in_thread.ready)
        return
    if isinstance(channel, discord.TextChannel):
        starter_id = callback.message_id if callback is not None else None
        if starter_id is None:
            starter_id = (await interaction.original_response()).id
        opener = ThreadOpener(client, channel, starter_id, thread_name(prompt))
        key = started_thread_key(channel.guild.id, channel.id, starter_id)
        await _turn(interaction, key, author, prompt, received_at, opener.surface)
        await opener.surface()  # the conversation goes on in the thread, even after a short reply
        return
    target: MessageTarget | None = channel if isinstance(channel, MessageTarget) else None
    if target is None and interaction.channel_id is not None:
        target = client.get_partial_messageable(interaction.channel_id, guild_id=interaction.guild_id)
    if target is None:
        return
    inline = ChannelSurface(target, edit_interval=interval)
    key = channel_key(target.id, interaction.guild_id)
    await _turn(interaction, key, author, prompt, received_at, inline.ready)


async def _turn(
    interaction: discord.Interaction[ThreadlineClient],
    key: ConversationKey,
    author: Author,
    prompt: str,
    received_at: float,
    continuation: ContinuationFactory,
) -> None:
    client = interaction.client
    surface = InteractionSurface(
        interaction, continuation, edit_interval=client.settings.discord_edit_interval
    )
    turn = Turn(
        key=key,
        author=author,
        text=prompt,
        platform_message_id=str(interaction.id),
        received_at=received_at,
    )
    result = await client.core.engine.handle_turn(turn, surface)
    log.debug("/chat %s in %s: %s", interaction.id, key.describe(), result.status)


async def run_reset(interaction: discord.Interaction[ThreadlineClient]) -> None:
    channel_id = interaction.channel_id
    if channel_id is None:
        return
    key = key_for_channel(interaction.channel, interaction.guild_id, channel_id)
    forgot = await interaction.client.core.engine.reset_conversation(key)
    if forgot:
        text = f"🧹 {interaction.user.mention} reset this conversation: I start afresh from the next message."
        await interaction.response.send_message(text, allowed_mentions=NO_PINGS)
    else:
        await interaction.response.send_message(
            "There is no conversation to forget here yet.", ephemeral=True, allowed_mentions=NO_PINGS
        )
