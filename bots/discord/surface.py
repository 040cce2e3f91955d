"""Discord surfaces: where one streamed reply goes (an interaction response, a channel or a thread).

A surface only posts and edits; throttling, splitting, fences and back-off live in `core.streaming`.
Every send and edit carries `NO_PINGS` explicitly: Discord re-parses mentions on each edit, and model
output must never ping @everyone, @here, a role or a user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
import discord

from core.surface import (
    EditBudget,
    MarkdownFlavor,
    MessageGone,
    MessageRejected,
    RateLimited,
    SurfaceError,
    SurfaceLimits,
)

log = logging.getLogger("threadline.discord.surface")

MAX_LENGTH = 2000  # characters (Unicode code points) of message content
DEFAULT_EDIT_INTERVAL = 1.0  # seconds between two edits of one message
# Discord's per-channel buckets (posts, edits, thread creation) allow 5 requests per 5 s, in fixed
# windows that start at a request we cannot tell apart: a sliding window 0.25 s longer always fits.
ROUTE_LIMIT = 5
ROUTE_WINDOW = 5.25
# Discord allows 50 requests per second per bot token and never announces how close a bot is.
# 5 at once, then 42 per second, keeps any one second within 50, also when a request the renderer
# paid for leaves up to `core.streaming.budget.PAID_TOKEN_LIFETIME` (0.05 s) late: 5 + 42 × 1.05 ≈ 49.
# (A request is paced when it starts; one that must open a new connection first leaves that much
# later, which the remaining margin and the 429 back-off have to absorb.)
GLOBAL_REQUESTS = EditBudget(key="discord:global-requests", rate=42.0, burst=5)
INTERACTION_TOKEN_LIFETIME = 15 * 60.0
TOKEN_SAFETY_MARGIN = 60.0  # stop using the interaction token this long before it expires

NO_PINGS = discord.AllowedMentions(everyone=False, roles=False, users=False, replied_user=True)

# https://discord.com/developers/docs/topics/opcodes-and-status-codes#json
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
INVALID_WEBHOOK_TOKEN = 50027
THREAD_ARCHIVED = 50083

MessageTarget = discord.TextChannel | discord.Thread | discord.VoiceChannel | discord.PartialMessageable


def channel_budget(channel_id: int | str, action: str) -> EditBudget:
    """The budget of one of a channel's buckets ("posts", "edits", "threads", ...)."""
    return EditBudget.windowed(f"discord:{channel_id}:{action}", ROUTE_LIMIT, ROUTE_WINDOW)


def discord_limits(channel_id: int, edit_interval: float | None = None) -> SurfaceLimits:
    """Limits of a reply in `channel_id`: posts and edits share that channel's buckets with every
    other stream, and every call counts toward the bot's global requests per second."""
    return _reply_limits(
        edit_interval,
        shared_budget=channel_budget(channel_id, "edits"),
        post_budgets=(channel_budget(channel_id, "posts"),),
        request_budget=GLOBAL_REQUESTS,
    )


def interaction_limits(interaction_id: int, edit_interval: float | None = None) -> SurfaceLimits:
    """Limits of a slash command's reply: its response is the interaction's webhook message (a bucket
    per interaction token, outside the global limit); continuation parts are paced by the client."""
    budget = EditBudget.windowed(f"discord:interaction:{interaction_id}", ROUTE_LIMIT, ROUTE_WINDOW)
    return _reply_limits(edit_interval, shared_budget=budget)


def _reply_limits(
    edit_interval: float | None,
    *,
    shared_budget: EditBudget,
    post_budgets: tuple[EditBudget, ...] = (),
    request_budget: EditBudget | None = None,
) -> SurfaceLimits:
    return SurfaceLimits(
        max_length=MAX_LENGTH,
        length_unit="chars",
        min_edit_interval=DEFAULT_EDIT_INTERVAL if edit_interval is None else edit_interval,
        markdown=MarkdownFlavor.COMMONMARK,
        shared_budget=shared_budget,
        post_budgets=post_budgets,
        request_budget=request_budget,
    )


def _retry_after(exc: discord.HTTPException) -> float:
    header = exc.response.headers.get("Retry-After") if exc.response is not None else None
    try:
        return max(float(header), 0.0) if header is not None else 1.0
    except ValueError:
        return 1.0


def map_error(exc: Exception) -> SurfaceError:
    """Translate a discord.py failure into the core's surface errors (by status and JSON code)."""
    if isinstance(exc, discord.RateLimited):  # discord.py refused to wait that long itself
        return RateLimited(exc.retry_after)
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429:  # e.g. a 429 without `Via` (discord.py does not retry those)
            return RateLimited(_retry_after(exc))
        if exc.code in (UNKNOWN_MESSAGE, UNKNOWN_CHANNEL, THREAD_ARCHIVED) or isinstance(
            exc, discord.NotFound
        ):
            return MessageGone(f"Discord: {exc.status} code {exc.code}")
        if exc.status == 400 or isinstance(exc, discord.Forbidden):
            return MessageRejected(f"Discord: {exc.status} code {exc.code}")
        return SurfaceError(f"Discord: {exc.status} code {exc.code}")
    return SurfaceError(f"Discord unreachable: {type(exc).__name__}")


_FAILURES = (discord.DiscordException, aiohttp.ClientError, OSError, asyncio.TimeoutError)


class ChannelSurface:
    """Posts and edits plain messages in a text channel or a thread (with the bot token)."""

    def __init__(
        self,
        target: MessageTarget,
        *,
        edit_interval: float | None = None,
        reply_to: discord.Message | None = None,
    ) -> None:
        self.target = target
        self._limits = discord_limits(target.id, edit_interval)
        self._reply_to = reply_to  # the first post answers this message (inline replies)

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    def render(self, markdown: str) -> str:
        return markdown  # Discord renders CommonMark-like Markdown as the model writes it

    async def ready(self) -> ChannelSurface:
        """This surface as a continuation target (see `InteractionSurface`)."""
        return self

    async def post(self, text: str) -> str:
        reference, self._reply_to = self._reply_to, None
        try:
            if reference is not None:
                message = await self.target.send(text, allowed_mentions=NO_PINGS, reference=reference)
            else:
                message = await self.target.send(text, allowed_mentions=NO_PINGS)
        except _FAILURES as exc:
            self._log_archived(exc, "post in")
            raise map_error(exc) from exc
        return str(message.id)

    async def edit(self, message_id: str, text: str) -> None:
        partial = self.target.get_partial_message(int(message_id))
        try:
            await partial.edit(content=text, allowed_mentions=NO_PINGS)
        except discord.HTTPException as exc:
            if exc.code != THREAD_ARCHIVED or not await self._unarchive():
                self._log_archived(exc, "edit in")
                raise map_error(exc) from exc
            try:  # the thread was archived under us and could be re-opened: once more
                await partial.edit(content=text, allowed_mentions=NO_PINGS)
            except _FAILURES as again:
                raise map_error(again) from again
        except _FAILURES as exc:
            raise map_error(exc) from exc

    async def _unarchive(self) -> bool:
        thread = self.target
        if not isinstance(thread, discord.Thread) or thread.locked:
            return False
        try:
            await thread.edit(archived=False)
        except discord.HTTPException:
            return False
        log.info("re-opened archived thread %s to finish a reply", thread.id)
        return True

    def _log_archived(self, exc: Exception, action: str) -> None:
        if isinstance(exc, discord.HTTPException) and exc.code == THREAD_ARCHIVED:
            log.warning(
                "cannot %s thread %s: it is archived and locked (a moderator must unlock it)",
                action,
                self.target.id,
            )


class ThreadSurface(ChannelSurface):
    """A conversation's thread, whose starter message (a `/chat` reply) lives in the parent channel.

    Discord gives a thread opened from a message the message's id; that message stays in the parent
    channel, so editing it goes there. Everything else is posted and edited in the thread.
    """

    def __init__(
        self, thread: MessageTarget, parent: MessageTarget, *, edit_interval: float | None = None
    ) -> None:
        super().__init__(thread, edit_interval=edit_interval)
        self._starter = ChannelSurface(parent, edit_interval=edit_interval)

    async def edit(self, message_id: str, text: str) -> None:
        if int(message_id) == self.target.id:
            await self._starter.edit(message_id, text)
        else:
            await super().edit(message_id, text)


ContinuationFactory = Callable[[], Awaitable[ChannelSurface]]


class InteractionSurface:
    """A slash command's reply: the deferred original response first, then channel messages.

    Continuation parts go through `continuation()` (the conversation's thread, or the channel). The
    interaction token lives 15 minutes: near expiry, or when the webhook answers 401/404, the original
    response is edited with the bot token instead, and if that is refused a new channel message
    replaces it, so a long stream never fails for the token's sake.
    """

    def __init__(
        self,
        interaction: discord.Interaction,
        continuation: ContinuationFactory,
        *,
        edit_interval: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._interaction = interaction
        self._continuation = continuation
        self._limits = interaction_limits(interaction.id, edit_interval)
        self._clock = clock
        self._expires_at = interaction.created_at.timestamp() + INTERACTION_TOKEN_LIFETIME
        self._original: str | None = None
        self._token_usable = True
        self._replacement: str | None = None  # a channel message standing in for the original response
        self._continued: set[str] = set()

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    @property
    def original_id(self) -> str | None:
        return self._original

    def render(self, markdown: str) -> str:
        return markdown

    def _token_valid(self) -> bool:
        if self._token_usable and self._clock() >= self._expires_at - TOKEN_SAFETY_MARGIN:
            log.info(
                "interaction token of %s is about to expire; continuing without it", self._interaction.id
            )
            self._token_usable = False
        return self._token_usable

    async def post(self, text: str) -> str:
        if self._original is None and self._token_valid():
            try:
                message = await self._interaction.edit_original_response(
                    content=text, allowed_mentions=NO_PINGS
                )
            except discord.HTTPException as exc:
                if not self._token_failure(exc):
                    raise map_error(exc) from exc
            except _FAILURES as exc:
                raise map_error(exc) from exc
            else:
                self._original = str(message.id)
                return self._original
        surface = await self._continuation()
        message_id = await surface.post(text)
        self._continued.add(message_id)
        if self._original is None:
            self._original = message_id
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        if message_id in self._continued:
            await (await self._continuation()).edit(message_id, text)
            return
        if message_id != self._original:
            raise MessageGone(f"message {message_id} does not belong to this reply")
        if self._replacement is not None:
            await (await self._continuation()).edit(self._replacement, text)
            return
        if self._token_valid():
            try:
                await self._interaction.edit_original_response(content=text, allowed_mentions=NO_PINGS)
                return
            except discord.HTTPException as exc:
                if not self._token_failure(exc):
                    raise map_error(exc) from exc
            except _FAILURES as exc:
                raise map_error(exc) from exc
        await self._edit_without_token(message_id, text)

    def _token_failure(self, exc: discord.HTTPException) -> bool:
        """401 Invalid Webhook Token / 404 Unknown Webhook: the token is dead, not the message."""
        dead = exc.status == 401 or exc.code in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK)
        if dead:
            log.info(
                "interaction token of %s no longer works (%s); continuing without it",
                self._interaction.id,
                exc.status,
            )
            self._token_usable = False
        return dead

    async def _edit_without_token(self, message_id: str, text: str) -> None:
        channel = self._interaction.channel
        if isinstance(channel, MessageTarget):
            try:
                await channel.get_partial_message(int(message_id)).edit(
                    content=text, allowed_mentions=NO_PINGS
                )
                return
            except discord.HTTPException as exc:
                if exc.status == 429 or exc.code == UNKNOWN_MESSAGE:  # rate limited, or deleted
                    raise map_error(exc) from exc
                log.info(
                    "cannot edit response %s with the bot token (%s); posting the rest anew",
                    message_id,
                    exc.status,
                )
            except _FAILURES as exc:
                raise map_error(exc) from exc
        surface = await self._continuation()
        self._replacement = await surface.post(text)
