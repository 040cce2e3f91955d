"""SlackSurface: one reply's place in Slack (a channel, or a thread in it), over chat.postMessage/update.

The core renderer decides when to post and edit; this module only makes the two calls and turns
Slack's answers into the core's error types (by status code and `error` code, never by message text).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.mrkdwn import to_mrkdwn
from core.surface import (
    EditBudget,
    MarkdownFlavor,
    MessageGone,
    MessageRejected,
    RateLimited,
    SurfaceError,
    SurfaceLimits,
)

# Popular bots cap a streamed message at ~3,500 bytes: chat.update has been seen failing with
# msg_too_long around 4,000 characters although `text` itself may hold 40,000 (PLATFORMS.md).
MAX_MESSAGE_BYTES = 3_500
DEFAULT_EDIT_INTERVAL = 1.0  # seconds between two edits of one message
UPDATE_RATE_PER_MINUTE = 50  # chat.update is Tier 3, shared by every stream in the workspace
UPDATE_BURST = 5
# Each streaming reply needs two chat.update calls soon (its first words, its final text); three
# replies fit the burst give or take one refill (1.2 s). Beyond three at once, a workspace's replies
# arrive whole instead, as new messages (chat.postMessage has a budget of its own, ~6× larger).
STREAMS_PER_WORKSPACE = 3
# chat.postMessage: "1 per second per channel, short bursts allowed" and "several hundred per minute"
# per workspace (assumed: bursts of 5 and 50). Each burst here is smaller, at the same rate: a post
# reaches Slack some milliseconds after its turn, not always as late as the one before, and the
# tokens left over absorb that (1 s of jitter per channel, 1 s per workspace).
POST_RATE_PER_CHANNEL = 1.0  # per second
POST_BURST_PER_CHANNEL = 4
POST_RATE_PER_MINUTE = 300  # per workspace
POST_BURST_PER_WORKSPACE = 45

GONE_ERRORS = frozenset(
    {
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "thread_not_found",
    }
)
REJECTED_ERRORS = frozenset(
    {"msg_too_long", "invalid_blocks", "invalid_blocks_format", "no_text", "too_many_attachments"}
)


def update_budget(team: str) -> EditBudget:
    return EditBudget(key=f"slack:{team}:chat.update", rate=UPDATE_RATE_PER_MINUTE / 60, burst=UPDATE_BURST)


def post_budgets(team: str, channel: str) -> tuple[EditBudget, ...]:
    """chat.postMessage's budgets: the channel's, then the workspace's (shared by all its channels)."""
    return (
        EditBudget(
            key=f"slack:{team}:{channel}:chat.postMessage",
            rate=POST_RATE_PER_CHANNEL,
            burst=POST_BURST_PER_CHANNEL,
        ),
        EditBudget(
            key=f"slack:{team}:chat.postMessage",
            rate=POST_RATE_PER_MINUTE / 60,
            burst=POST_BURST_PER_WORKSPACE,
        ),
    )


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list | tuple) else value)
    return None


def _retry_after(headers: Mapping[str, Any] | None) -> float:
    raw = _header(headers, "Retry-After")
    try:
        return max(float(raw), 0.0) if raw is not None else 1.0
    except ValueError:
        return 1.0


def surface_error(exc: SlackApiError) -> SurfaceError:
    """Map a Slack Web API failure onto the core's surface errors."""
    response = exc.response
    status = int(getattr(response, "status_code", 0) or 0)
    error = response.get("error") if hasattr(response, "get") else None
    code = str(error) if error else f"http_{status}"
    if status == 429 or code == "ratelimited":
        return RateLimited(_retry_after(getattr(response, "headers", None)), f"slack: {code}")
    if code in GONE_ERRORS:
        return MessageGone(f"slack: {code}")
    if code in REJECTED_ERRORS:
        return MessageRejected(f"slack: {code}")
    return SurfaceError(f"slack: {code}")


class SlackSurface:
    """Posts a reply into `channel` (in the thread `thread_ts` when given) and edits it."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        team: str,
        channel: str,
        thread_ts: str | None,
        edit_interval: float | None = None,
    ) -> None:
        self._client = client
        self.team = team
        self.channel = channel
        self.thread_ts = thread_ts
        self._limits = SurfaceLimits(
            max_length=MAX_MESSAGE_BYTES,
            length_unit="utf8_bytes",
            min_edit_interval=DEFAULT_EDIT_INTERVAL if edit_interval is None else edit_interval,
            markdown=MarkdownFlavor.SLACK_MRKDWN,
            shared_budget=update_budget(team),
            post_budgets=post_budgets(team, channel),
            streams_at_once=STREAMS_PER_WORKSPACE,
        )

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    def render(self, markdown: str) -> str:
        return to_mrkdwn(markdown)

    async def post(self, text: str) -> str:
        args: dict[str, Any] = {"channel": self.channel, "text": text}
        if self.thread_ts is not None:
            args["thread_ts"] = self.thread_ts
        try:
            response = await self._client.chat_postMessage(**args)
        except SlackApiError as exc:
            raise surface_error(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SurfaceError(f"slack: {type(exc).__name__}") from exc
        return str(response["ts"])

    async def edit(self, message_id: str, text: str) -> None:
        try:
            await self._client.chat_update(channel=self.channel, ts=message_id, text=text)
        except SlackApiError as exc:
            raise surface_error(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SurfaceError(f"slack: {type(exc).__name__}") from exc
