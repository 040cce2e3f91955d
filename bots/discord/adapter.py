"""DiscordAdapter: the adapter contract of docs/core-api.md on top of `ThreadlineClient`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord
from aiohttp import web

from bots.discord.client import ThreadlineClient, apply_endpoints, build_client
from bots.discord.invite import invite_url
from bots.discord.replies import clip
from bots.discord.routing import PLATFORM, channel_key, thread_name
from bots.discord.surface import NO_PINGS, ChannelSurface, ThreadSurface
from bots.discord.sync import sync_if_changed
from core.app import Core
from core.surface import Surface
from core.types import ConversationKey

log = logging.getLogger("threadline.discord")

READY_TIMEOUT = 30.0


class DiscordAdapter:
    name = "discord"

    def __init__(
        self,
        core: Core,
        http: web.Application | None = None,
        *,
        ready_timeout: float = READY_TIMEOUT,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self._core = core
        self._ready_timeout = ready_timeout
        self.client: ThreadlineClient = build_client(core.settings, core, **(client_options or {}))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self._core.settings
        if not settings.discord_token:
            raise ValueError("DISCORD_TOKEN is not set")
        apply_endpoints(settings)
        self._log_capabilities()
        await self.client.login(settings.discord_token)
        if self.client.application_id is not None:
            log.info("invite link (minimal permissions): %s", invite_url(self.client.application_id))
        await self._sync_commands()
        self._task = asyncio.create_task(self._connect(), name="discord-gateway")
        ready = asyncio.create_task(self.client.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, self._task}, timeout=self._ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if self._task in done:
            ready.cancel()
            self._task.result()  # raises what stopped the connection (bad intents, closed)
        elif ready not in done:
            ready.cancel()
            log.warning(
                "not connected to the Discord gateway after %.0f s; still trying", self._ready_timeout
            )

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            log.error(
                "Discord refused the message-content intent: enable 'Message Content Intent' for the bot in "
                "the Discord developer portal, or unset THREADLINE_DISCORD_MESSAGE_CONTENT"
            )
            raise
        except Exception:
            log.exception("the Discord connection stopped")
            raise

    async def _sync_commands(self) -> None:
        try:
            result = await sync_if_changed(self.client.tree, self._core.settings.discord_dev_guild_id)
        except discord.HTTPException as exc:
            log.warning(
                "could not publish the slash commands (%s, code %s); try `threadline discord sync`",
                exc.status,
                exc.code,
            )
        else:
            log.info("slash commands: %s", result)

    def _log_capabilities(self) -> None:
        settings = self._core.settings
        if settings.discord_message_content:
            log.info(
                "Discord: message-content intent on: messages in the bot's threads are answered "
                "without a mention (the intent must be enabled in the developer portal too)"
            )
        else:
            log.info(
                "Discord: message-content intent off (THREADLINE_DISCORD_MESSAGE_CONTENT=false): /chat and "
                "mentions work; follow-ups in threads need a mention, since the bot cannot read others"
            )
        if settings.discord_shard_count is not None:
            log.info(
                "Discord: %d shards, this process runs %s",
                settings.discord_shard_count,
                settings.discord_shard_ids or "all of them",
            )

    async def stop_receiving(self) -> None:
        """Take no new messages or commands; replies in flight still post and edit."""
        self.client.accepting = False

    async def stop(self) -> None:
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def ready(self) -> bool:
        return self.client.is_ready() and not self.client.is_closed()

    # -- core.ports.PlatformPort (scheduled prompts, finishing replies interrupted by a restart) ----

    def surface_for(self, key: ConversationKey) -> Surface:
        guild_id = int(key.workspace) if key.workspace else None
        edit_interval = self._core.settings.discord_edit_interval
        where = self.client.get_partial_messageable(int(key.thread), guild_id=guild_id)
        if key.thread == key.channel:
            return ChannelSurface(where, edit_interval=edit_interval)
        parent = self.client.get_partial_messageable(int(key.channel), guild_id=guild_id)
        return ThreadSurface(where, parent, edit_interval=edit_interval)

    async def open_thread(self, workspace: str, channel: str, header: str) -> tuple[ConversationKey, Surface]:
        """Post `header` in the channel and open the conversation's thread from it."""
        guild_id = int(workspace) if workspace else None
        edit_interval = self._core.settings.discord_edit_interval
        target = self.client.get_partial_messageable(int(channel), guild_id=guild_id)
        starter = await target.send(clip(header), allowed_mentions=NO_PINGS)
        try:
            thread = await starter.create_thread(name=thread_name(header))
        except discord.HTTPException as exc:
            log.warning(
                "cannot open a thread in channel %s (%s, code %s); answering inline",
                channel,
                exc.status,
                exc.code,
            )
            return channel_key(int(channel), guild_id), ChannelSurface(target, edit_interval=edit_interval)
        key = ConversationKey(PLATFORM, workspace, channel, str(starter.id))
        return key, ThreadSurface(thread, target, edit_interval=edit_interval)
