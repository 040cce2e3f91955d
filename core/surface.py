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
    """A rate limit shared by every stream (and request) that names the same `key`.

    Example: Slack's `chat.update` (~50/min per workspace) is
    `EditBudget(key="slack:T123:chat.update", rate=50/60, burst=5)`: a token bucket.
    With `window`, at most `burst` operations also fit in any `window` seconds (a sliding window):
    a platform bucket of fixed windows that start where the client cannot see them (Discord's
    5 per 5 s per channel) is respected by a sliding window a little longer than the platform's.
    """

    key: str
    rate: float  # sustained operations per second
    burst: int  # operations allowed at once before the rate applies
    window: float = 0.0  # seconds; > 0: never more than `burst` operations in any such span

    @classmethod
    def windowed(cls, key: str, limit: int, seconds: float) -> EditBudget:
        """At most `limit` operations in any `seconds`."""
        return cls(key=key, rate=limit / seconds, burst=limit, window=seconds)


@dataclass(frozen=True, slots=True)
class SurfaceLimits:
    """What a platform allows one reply; the renderer paces every call it makes within the budgets.

    Each budget is shared by every stream that names the same key. An edit waits for
    `shared_budget`, a post (the placeholder included) for each of `post_budgets`, and every call
    for `request_budget` as well (a per-process request ceiling, such as Discord's global 50/s,
    which the adapter's HTTP layer also charges for requests made outside the renderer: see
    `core.streaming.budget.EditBudgets.paid`).
    """

    max_length: int  # per message, in `length_unit`
    length_unit: Literal["chars", "utf8_bytes", "utf16_units"]
    min_edit_interval: float  # seconds between two edits of one message (0: no throttling)
    markdown: MarkdownFlavor
    shared_budget: EditBudget | None = None  # budget for edits shared across streams
    streaming_indicator: str = " ▍"  # appended while the reply still grows; "" for none
    placeholder: str = "_Thinking…_"
    post_budgets: tuple[EditBudget, ...] = ()  # budgets for posts, e.g. per channel and per workspace
    request_budget: EditBudget | None = None  # budget for every call, post or edit
    # At most this many replies stream at once against `shared_budget` (0: no limit); the others
    # are delivered whole, in new messages, when they are finished. Streaming more than an edit
    # budget can serve only postpones every reply's final text behind everyone's edits.
    streams_at_once: int = 0


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
