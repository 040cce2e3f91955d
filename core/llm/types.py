"""What callers hand to the LLM client and the events they get back."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.llm.errors import LLMError


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, str]] = field(hash=False)  # OpenAI chat messages: role, content, optional name
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    json_mode: bool = False  # sent as response_format={"type": "json_object"}


@dataclass(frozen=True)
class LLMTimeouts:
    first_token: float = 60.0  # from the request's start until the first content delta
    between_tokens: float = 30.0  # longest gap between two content deltas
    total: float = 300.0  # the whole reply


@dataclass(frozen=True)
class RetryPolicy:
    """Retries happen only before the first token, bounded in attempts and in time."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_total: float = 60.0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


class Outcome(StrEnum):
    COMPLETE = "complete"
    CUT_AT_LIMIT = "cut_at_limit"  # finish_reason "length"
    FILTERED = "filtered"  # finish_reason "content_filter"
    NO_FINISH_REASON = "no_finish_reason"  # the stream ended without one; the text is kept as complete
    INTERRUPTED = "interrupted"  # the stream broke after text was shown; the text is kept
    TIMEOUT_FIRST_TOKEN = "timeout_first_token"
    TIMEOUT_BETWEEN_TOKENS = "timeout_between_tokens"
    TIMEOUT_TOTAL = "timeout_total"
    FAILED = "failed"  # an error before any text

    @property
    def text_is_complete(self) -> bool:
        return self in (Outcome.COMPLETE, Outcome.NO_FINISH_REASON)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class StreamEnd:
    """The last event of every stream.

    `notice` is the short line to show under the reply (None when there is nothing to say);
    `error` is set whenever the stream ended because something went wrong.
    """

    outcome: Outcome
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    error: LLMError | None = None
    notice: str | None = None


StreamEvent = TextDelta | StreamEnd
