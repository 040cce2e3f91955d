"""Token usage and estimated cost per channel and per person, and daily token quotas."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from core.storage.database import Database
from core.storage.models import ConversationRow, MessageRow

# USD per million tokens (input, output), list prices of late 2025; override with
# THREADLINE_MODEL_PRICES. Matched by the longest prefix of the bare model name.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
}


@dataclass(frozen=True, slots=True)
class Prices:
    table: Mapping[str, tuple[float, float]]

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, tuple[float, float]]) -> Prices:
        return cls({**DEFAULT_PRICES, **overrides})

    def per_million(self, model: str) -> tuple[float, float] | None:
        if model in self.table:
            return self.table[model]
        bare = model.rsplit("/", 1)[-1]
        matches = [prefix for prefix in self.table if bare.startswith(prefix)]
        return self.table[max(matches, key=len)] if matches else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.per_million(model)
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000


@dataclass(frozen=True, slots=True)
class ModelUsage:
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float | None  # None: no price known for this model

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class UsageTotals:
    by_model: list[ModelUsage]

    @property
    def tokens(self) -> int:
        return sum(line.tokens for line in self.by_model)

    @property
    def known_cost(self) -> float:
        return sum(line.cost or 0.0 for line in self.by_model)

    @property
    def unpriced_models(self) -> list[str]:
        return [line.model for line in self.by_model if line.cost is None]


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


class UsageService:
    def __init__(self, db: Database, prices: Prices) -> None:
        self._db = db
        self._prices = prices

    async def totals(
        self,
        platform: str,
        workspace: str,
        since: datetime,
        *,
        channel: str | None = None,
        user: str | None = None,
    ) -> UsageTotals:
        query = (
            select(
                MessageRow.model,
                func.coalesce(func.sum(MessageRow.prompt_tokens), 0),
                func.coalesce(func.sum(MessageRow.completion_tokens), 0),
            )
            .join(ConversationRow, MessageRow.conversation_id == ConversationRow.id)
            .where(
                MessageRow.role == "assistant",
                MessageRow.created_at >= since,
                ConversationRow.platform == platform,
                ConversationRow.workspace == workspace,
            )
            .group_by(MessageRow.model)
            .order_by(MessageRow.model)
        )
        if channel is not None:
            query = query.where(ConversationRow.channel == channel)
        if user is not None:
            query = query.where(MessageRow.requested_by == user)
        async with self._db.session() as session:
            rows = (await session.execute(query)).all()
        lines = []
        for model, prompt, completion in rows:
            p, c = int(prompt or 0), int(completion or 0)
            if p or c:
                lines.append(ModelUsage(model or "unknown", p, c, self._prices.cost(model or "", p, c)))
        return UsageTotals(lines)

    async def tokens_today(
        self,
        platform: str,
        workspace: str,
        now: datetime,
        *,
        channel: str | None = None,
        user: str | None = None,
    ) -> int:
        return (await self.totals(platform, workspace, day_start(now), channel=channel, user=user)).tokens

    async def report(
        self, platform: str, workspace: str, channel: str, user: str, now: datetime | None = None
    ) -> str:
        """The `/usage` answer: this channel and this person, today and this month (UTC)."""
        now = now or datetime.now(UTC)
        sections: list[str] = []
        for title, scope in (("This channel", {"channel": channel}), ("You", {"user": user})):
            today = await self.totals(platform, workspace, day_start(now), **scope)
            month = await self.totals(platform, workspace, month_start(now), **scope)
            sections.append(
                f"**{title}**\n"
                f"• Today: {format_totals(today)}\n"
                f"• This month ({now:%B %Y}): {format_totals(month)}"
            )
        return "\n\n".join(sections) + "\n\n_Costs are estimates from list prices; days and months are UTC._"


def format_totals(totals: UsageTotals) -> str:
    if not totals.by_model:
        return "no tokens"
    text = f"{totals.tokens:,} tokens"
    priced = [line for line in totals.by_model if line.cost is not None]
    if priced:
        text += f", about ${totals.known_cost:,.4f}"
    if totals.unpriced_models:
        text += f" (no price known for {', '.join(totals.unpriced_models)})"
    return text


@dataclass(frozen=True, slots=True)
class Quotas:
    daily_tokens_per_user: int | None = None
    daily_tokens_per_channel: int | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.daily_tokens_per_user or self.daily_tokens_per_channel)


async def quota_refusal(
    usage: UsageService, quotas: Quotas, platform: str, workspace: str, channel: str, user: str, now: datetime
) -> str | None:
    """A short explanation when the person or the channel used up today's tokens, else None."""
    if quotas.daily_tokens_per_user:
        used = await usage.tokens_today(platform, workspace, now, user=user)
        if used >= quotas.daily_tokens_per_user:
            return _over("You have", used, quotas.daily_tokens_per_user, now)
    if quotas.daily_tokens_per_channel:
        used = await usage.tokens_today(platform, workspace, now, channel=channel)
        if used >= quotas.daily_tokens_per_channel:
            return _over("This channel has", used, quotas.daily_tokens_per_channel, now)
    return None


def _over(who: str, used: int, limit: int, now: datetime) -> str:
    reset = day_start(now) + timedelta(days=1)
    hours = max(1, round((reset - now).total_seconds() / 3600))
    return (
        f"⏳ {who} used {used:,} of today's {limit:,} tokens. The quota resets at 00:00 UTC "
        f"(in about {hours} h); ask an admin if you need more."
    )
