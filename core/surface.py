"""The output port: what the core needs from a platform to show a streamed reply.

An adapter implements `Surface` with single post/edit calls and describes the platform's limits.
Everything else (throttling, coalescing, splitting, fences, 429 back-off, delivering the final text)
lives once in `core.streaming`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol


class MarkdownFlavor(StrEnum):
    """How the platform renders the text it is given."""

    PLAIN = "plain"  # shown as typed (a terminal)
    COMMONMARK = "commonmark"  # standard Markdown (Discord, Slack `markdown_text`)
    SLACK_MRKDWN = "slack_mrkdwn"  # Slack's classic mrkdwn


@dataclass(frozen=True, slots=True)
class EditBudget:
    """A rate limit shared by every stream whose surface names the same `key`.

    Example: Slack's `chat.update` (~50/min per workspace) is
    `EditBudget(key="slack:T123:chat.update", rate=50/60, burst=5)`.
    """

    key: str
    rate: float  # sustained operations per second
    burst: int  # operations allowed at once before the rate applies


@dataclass(frozen=True, slots=True)
class SurfaceLimits:
    max_length: int  # per message, in `length_unit`
    length_unit: Literal["chars", "utf8_bytes", "utf16_units"]
    min_edit_interval: float  # seconds between two edits of one message (0: no throttling)
    markdown: MarkdownFlavor
    shared_budget: EditBudget | None = None  # budget for edits (and continuation posts) shared across streams
    streaming_indicator: str = " ▍"  # appended while the reply still grows; "" for none
    placeholder: str = "_Thinking…_"


class SurfaceError(Exception):
    """A post or edit failed; the renderer may retry it."""


class RateLimited(SurfaceError):
    """The platform answered 429; `retry_after` is in seconds."""

    def __init__(self, retry_after: float, message: str = "rate limited") -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MessageGone(SurfaceError):
    """The message no longer exists (a person deleted it) or can no longer be edited."""


class MessageRejected(SurfaceError):
    """The platform refused this text for good (too long, invalid); retrying the same call is useless."""


class Surface(Protocol):
    """One reply's destination: a thread, a channel, an interaction, a terminal."""

    @property
    def limits(self) -> SurfaceLimits: ...

    def render(self, markdown: str) -> str:
        """Convert standard Markdown from the model into text this platform renders well."""
        ...

    async def post(self, text: str) -> str:
        """Post a new message in the reply's place; return its platform id."""
        ...

    async def edit(self, message_id: str, text: str) -> None:
        """Replace the text of a message this surface posted."""
        ...
