"""Discord errors → the core's surface errors (by HTTP status and Discord JSON code, never by text)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp
import discord
import pytest

from bots.discord.surface import (
    GLOBAL_REQUESTS,
    MAX_LENGTH,
    NO_PINGS,
    discord_limits,
    interaction_limits,
    map_error,
)
from core.surface import MarkdownFlavor, MessageGone, MessageRejected, RateLimited, SurfaceError


def http_error(status: int, code: int = 0, headers: dict[str, str] | None = None) -> discord.HTTPException:
    response: Any = SimpleNamespace(status=status, reason="", headers=headers or {})
    kind = {403: discord.Forbidden, 404: discord.NotFound}.get(status, discord.HTTPException)
    return kind(response, {"message": "whatever the text says", "code": code})


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (http_error(404, 10008), MessageGone),  # Unknown Message: a person deleted the reply
        (http_error(404, 10003), MessageGone),  # Unknown Channel: the thread was deleted
        (http_error(400, 50083), MessageGone),  # archived thread that could not be re-opened
        (http_error(400, 50035), MessageRejected),  # Invalid Form Body (e.g. longer than 2,000)
        (http_error(403, 50013), MessageRejected),  # Missing Permissions
        (http_error(503), SurfaceError),
        (aiohttp.ClientConnectionError(), SurfaceError),
    ],
)
def test_errors_map_by_status_and_code(error: Exception, expected: type[SurfaceError]) -> None:
    mapped = map_error(error)
    assert type(mapped) is expected


def test_rate_limits_carry_the_retry_after() -> None:
    mapped = map_error(http_error(429, 0, {"Retry-After": "2.5"}))
    assert isinstance(mapped, RateLimited) and mapped.retry_after == 2.5
    mapped = map_error(discord.RateLimited(7.0))
    assert isinstance(mapped, RateLimited) and mapped.retry_after == 7.0


def test_limits_share_one_budget_per_channel() -> None:
    limits = discord_limits(42)
    assert limits.max_length == MAX_LENGTH == 2000 and limits.length_unit == "chars"
    assert limits.markdown is MarkdownFlavor.COMMONMARK and limits.min_edit_interval == 1.0
    assert limits.shared_budget is not None and limits.shared_budget.key == "discord:42:edits"
    assert discord_limits(42, 0.25).shared_budget == discord_limits(42, 0.25).shared_budget
    # Discord's per-channel buckets are 5 per 5 s windows: never more than 5 in any 5.25 s.
    assert (limits.shared_budget.burst, limits.shared_budget.window) == (5, 5.25)
    assert [b.key for b in limits.post_budgets] == ["discord:42:posts"]
    assert limits.request_budget == GLOBAL_REQUESTS  # every call counts toward the global 50/s


def test_interaction_responses_are_outside_the_global_budget() -> None:
    limits = interaction_limits(7)
    assert limits.request_budget is None and limits.post_budgets == ()
    assert limits.shared_budget is not None and limits.shared_budget.key == "discord:interaction:7"


def test_no_pings_allows_nothing_but_the_reply_author() -> None:
    assert NO_PINGS.to_dict() == {"parse": [], "replied_user": True}
