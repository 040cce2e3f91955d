"""The discord.py client: endpoints, intents, mention safety, the command tree, event entry points."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import discord
import yarl
from discord import app_commands

from bots.discord.commands import register_commands
from bots.discord.messages import handle_message
from bots.discord.replies import report_command_error
from bots.discord.surface import NO_PINGS
from core.app import Core
from core.config import Settings
from core.streaming import EditBudgets
from core.surface import EditBudget

log = logging.getLogger("threadline.discord")


def apply_endpoints(settings: Settings) -> None:
    """DISCORD_API_URL / DISCORD_GATEWAY_URL (a rate-limit proxy, a test fake). Process-wide in discord.py."""
    discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def intents_for(settings: Settings) -> discord.Intents:
    """Default intents; the privileged message-content intent only when configured."""
    intents = discord.Intents.default()
    intents.message_content = settings.discord_message_content
    intents.members = False
    intents.presences = False
    return intents


class ThreadlineTree(app_commands.CommandTree["ThreadlineClient"]):
    async def interaction_check(self, interaction: discord.Interaction[ThreadlineClient], /) -> bool:
        if interaction.client.accepting:
            return True
        if interaction.type is discord.InteractionType.application_command:
            await interaction.response.send_message(
                "The bot is restarting; please try again in a minute.", ephemeral=True
            )
        return False

    async def on_error(
        self, interaction: discord.Interaction[ThreadlineClient], error: app_commands.AppCommandError, /
    ) -> None:
        await report_command_error(interaction, error)


# Discord allows 50 requests per second per bot token and never announces how close a bot is:
# pace every request of this process below it. Interaction callbacks and webhooks are exempt.
GLOBAL_REQUESTS = EditBudget(key="discord:global-requests", rate=40.0, burst=10)  # any 1 s: <= 50
_EXEMPT_ROUTES = ("/interactions/", "/webhooks/")


def pace_global_requests(http: discord.http.HTTPClient, budgets: EditBudgets) -> None:
    request = http.request

    async def paced(route: discord.http.Route, **kwargs: Any) -> Any:
        if not route.path.startswith(_EXEMPT_ROUTES):
            await budgets.acquire(GLOBAL_REQUESTS)
        return await request(route, **kwargs)

    http.request = paced  # type: ignore[method-assign]


class ThreadlineClient(discord.Client):
    """One bot connection (all shards of this process). `core` is None for command sync only."""

    def __init__(self, settings: Settings, core: Core | None = None, **options: Any) -> None:
        super().__init__(intents=intents_for(settings), allowed_mentions=NO_PINGS, **options)
        self.settings = settings
        self._core = core
        self.tree = ThreadlineTree(
            self,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
            allowed_installs=app_commands.AppInstallationType(guild=True),
        )
        register_commands(self.tree)
        self.accepting = True  # False once the service stops taking new events (shutdown)
        pace_global_requests(self.http, core.budgets if core is not None else EditBudgets())

    @property
    def core(self) -> Core:
        if self._core is None:
            raise RuntimeError("this Discord client was built without the core (command sync only)")
        return self._core

    async def on_ready(self) -> None:
        user = self.user
        log.info(
            "connected to Discord as %s (id %s) in %d servers",
            user,
            user.id if user else "?",
            len(self.guilds),
        )

    async def on_message(self, message: discord.Message) -> None:
        received_at = time.monotonic()
        if self.accepting:
            await handle_message(self, message, received_at)


class ShardedThreadlineClient(ThreadlineClient, discord.AutoShardedClient):
    """The same bot split over shards (THREADLINE_DISCORD_SHARD_COUNT / _SHARD_IDS)."""


def build_client(settings: Settings, core: Core | None = None, **options: Any) -> ThreadlineClient:
    if settings.discord_shard_count is not None:
        return ShardedThreadlineClient(
            settings,
            core,
            shard_count=settings.discord_shard_count,
            shard_ids=settings.discord_shard_ids,
            **options,
        )
    if settings.discord_shard_ids:
        raise ValueError("THREADLINE_DISCORD_SHARD_IDS needs THREADLINE_DISCORD_SHARD_COUNT")
    return ThreadlineClient(settings, core, **options)


@asynccontextmanager
async def logged_in(settings: Settings) -> AsyncIterator[ThreadlineClient]:
    """A client logged in over REST only (no gateway): for command sync and checks from the CLI."""
    if not settings.discord_token:
        raise ValueError("DISCORD_TOKEN is not set")
    apply_endpoints(settings)
    client = ThreadlineClient(settings, core=None)
    try:
        await client.login(settings.discord_token)
        yield client
    finally:
        await client.close()
