"""How long to wait before retrying: the provider's hint when it gives one, else full-jitter back-off."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from core.llm.types import RetryPolicy


def backoff_delay(policy: RetryPolicy, attempt: int, retry_after: float | None = None) -> float:
    """Delay before attempt `attempt + 1`; never longer than `policy.max_delay`."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), policy.max_delay)
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
    return random.uniform(0.0, ceiling)


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """`retry-after-ms` (milliseconds), else `retry-after` (seconds or an HTTP date), else None."""
    milliseconds = _finite(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return seconds
    return _seconds_until(value, now or datetime.now(UTC))


def _finite(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _seconds_until(http_date: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)
