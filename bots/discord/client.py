"""The discord.py client: endpoints, intents, mention safety, the command tree, event entry points."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands

from bots.discord.commands import register_commands
from bots.discord.messages import handle_message
from bots.discord.replies import report_command_error
from bots.discord.surface import GLOBAL_REQUESTS, NO_PINGS, channel_budget
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


# Every request of this process is paced where it leaves (an aiohttp trace hook, so retries and
# requests discord.py makes on its own count too): under the global 50/s (interaction callbacks and
# webhooks are exempt), and for the per-channel buckets a burst of conversations fills at once, under
# Discord's 5 per 5 s. discord.py only learns a bucket from the first answer, and trusts a fresh
# window's first answer over requests still in flight, so it cannot do the latter alone.
_EXEMPT_ROUTES = ("/interactions/", "/webhooks/")
_CHANNEL_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"/channels/(\d+)/messages/\d+/threads"), "threads"),
    ("POST", re.compile(r"/channels/(\d+)/threads"), "new-threads"),
    ("POST", re.compile(r"/channels/(\d+)/messages"), "posts"),
    ("PATCH", re.compile(r"/channels/(\d+)/messages/\d+"), "edits"),
)


def request_budgets(method: str, path: str) -> tuple[EditBudget, ...]:
    """What a request to `path` (below the API base) waits for: its channel's bucket, then the global one."""
    if path.startswith(_EXEMPT_ROUTES):
        return ()
    for route_method, pattern, action in _CHANNEL_ROUTES:
        if method == route_method and (match := pattern.fullmatch(path)):
            return (channel_budget(match.group(1), action), GLOBAL_REQUESTS)
    return (GLOBAL_REQUESTS,)


@functools.lru_cache(maxsize=4)
def _parsed_base(base: str) -> tuple[yarl.URL, str]:
    url = yarl.URL(base)
    return url.origin(), url.path.rstrip("/")


def _api_path(url: yarl.URL) -> str | None:
    """`url`'s path below Discord's API base, or None for anything else (the gateway, the CDN)."""
    origin, prefix = _parsed_base(discord.http.Route.BASE)
    if url.origin() != origin or not url.path.startswith(prefix + "/"):
        return None
    return url.path[len(prefix) :]


def _retry_after(headers: Any) -> float:
    try:
        return max(float(headers.get("Retry-After", 1.0)), 0.0)
    except ValueError:
        return 1.0


def pacing_trace(budgets: EditBudgets) -> aiohttp.TraceConfig:
    """An aiohttp trace that holds each Discord API request until its budgets allow it to leave.

    A renderer that already took a request's tokens (`EditBudgets.paid`) is not charged twice.
    """
    trace = aiohttp.TraceConfig()

    async def on_request_start(
        _session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        path = _api_path(params.url)
        if path is not None:
            for budget in request_budgets(params.method, path):
                await budgets.charge(budget)

    async def on_request_end(
        _session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        headers = params.response.headers
        if params.response.status == 429 and headers.get("X-RateLimit-Global"):
            log.warning("Discord refused a request for the global rate limit; pausing every request")
            budgets.penalize(GLOBAL_REQUESTS, _retry_after(headers))

    trace.on_request_start.append(on_request_start)
    trace.on_request_end.append(on_request_end)
    return trace


class _PromptRatelimit(discord.http.Ratelimit):
    """discord.py's bucket, except that the request which used the bucket's last token returns at once.

    discord.py keeps that request's caller until the bucket resets (a mention's thread, the fifth
    in its channel within 5 s, waited ~5 s after Discord had created it); the reset now runs in the
    background, and requests after it still wait for it as before.
    """

    __slots__ = ()

    async def __aexit__(self, *exc_info: Any) -> None:
        task = asyncio.create_task(super().__aexit__(*exc_info), name="discord-bucket-reset")
        _BUCKET_RESETS.add(task)
        task.add_done_callback(_bucket_reset_done)


_BUCKET_RESETS: set[asyncio.Task[None]] = set()


def _bucket_reset_done(task: asyncio.Task[None]) -> None:
    _BUCKET_RESETS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("a Discord rate-limit bucket failed to reset", exc_info=task.exception())


def cancel_bucket_resets() -> None:
    """Stop the background bucket resets of this event loop (the client is closing)."""
    loop = asyncio.get_running_loop()
    for task in list(_BUCKET_RESETS):
        if task.get_loop() is loop:
            task.cancel()


def answer_before_bucket_resets(http: discord.http.HTTPClient) -> None:
    """Make every new bucket of `http` a `_PromptRatelimit`."""
    original = http.get_ratelimit

    def get_ratelimit(key: str) -> discord.http.Ratelimit:
        if key not in http._buckets:
            http._buckets[key] = _PromptRatelimit(http.max_ratelimit_timeout)
        return original(key)

    http.get_ratelimit = get_ratelimit  # type: ignore[method-assign]


ParseEvent = Callable[[dict[str, Any]], None]
OWN_ECHOES = ("MESSAGE_CREATE", "MESSAGE_UPDATE")


def is_own_echo(data: dict[str, Any], user: discord.ClientUser | None) -> bool:
    """A post or edit of the bot's own, without components (those views may track): nothing to do."""
    author = data.get("author")
    return (
        user is not None
        and isinstance(author, dict)
        and author.get("id") == str(user.id)
        and not data.get("components")
    )


def drop_own_echoes(client: discord.Client) -> None:
    """Discord sends the bot every message it posts and every edit it makes, each of a reply's edits
    included. discord.py would build a Message for each (and a task for on_message); the bot has no use
    for them, so they are dropped when they arrive."""
    parsers: dict[str, ParseEvent] = client._connection.parsers

    def dropping(parse: ParseEvent) -> ParseEvent:
        def parse_unless_own(data: dict[str, Any]) -> None:
            if not is_own_echo(data, client.user):
                parse(data)

        return parse_unless_own

    for event in OWN_ECHOES:
        parsers[event] = dropping(parsers[event])


class ThreadlineClient(discord.Client):
    """One bot connection (all shards of this process). `core` is None for command sync only."""

    def __init__(self, settings: Settings, core: Core | None = None, **options: Any) -> None:
        budgets = core.budgets if core is not None else EditBudgets()
        options.setdefault("max_messages", None)  # history comes from the database, never this cache
        super().__init__(
            intents=intents_for(settings),
            allowed_mentions=NO_PINGS,
            http_trace=pacing_trace(budgets),
            **options,
        )
        self.settings = settings
        self._core = core
        self.tree = ThreadlineTree(
            self,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
            allowed_installs=app_commands.AppInstallationType(guild=True),
        )
        register_commands(self.tree)
        drop_own_echoes(self)
        self.accepting = True  # False once the service stops taking new events (shutdown)
        answer_before_bucket_resets(self.http)

    @property
    def core(self) -> Core:
        if self._core is None:
            raise RuntimeError("this Discord client was built without the core (command sync only)")
        return self._core

    async def close(self) -> None:
        await super().close()
        cancel_bucket_resets()

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
