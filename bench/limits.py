"""Platform rate limits, as the bench's fakes enforce them (the test fakes enforce none).

Neither platform publishes its exact algorithm; these are the documented rates with the burst the
documentation hints at, written down here so every figure can be judged against them:

Slack (https://api.slack.com/apis/rate-limits)
  chat.update        Tier 3, "50+ per minute" per workspace, "sporadic bursts welcome":
                     token bucket 50/60 s per workspace, burst 10.
  chat.postMessage   "1 per second per channel, short bursts allowed", and "several hundred per
                     minute" per workspace: token bucket 1/s per channel, burst 5; and 300/60 s per
                     workspace, burst 50.
  users.info         Tier 4, "100+ per minute": 100/60 s per workspace, burst 20.
  conversations.replies / .history  Tier 3: 50/60 s per workspace, burst 10.
  A request over its budget gets HTTP 429 {"ok": false, "error": "ratelimited"} and `Retry-After`
  (whole seconds, as Slack sends it).

Discord (https://discord.com/developers/docs/topics/rate-limits)
  Per route and major parameter (channel, or webhook id + token): fixed windows of 5 requests per
  5 s that start at the window's first request, announced in `X-RateLimit-Limit/-Remaining/-Reset/
  -Reset-After/-Bucket` on every answer (discord.py reads them and waits before it would exceed them).
  Global: 50 requests per second per bot token (interaction callbacks and interaction webhooks
  excepted); never announced in advance.
  A request over a limit gets HTTP 429 with `Retry-After`, `Via` (without it discord.py assumes a
  Cloudflare ban) and JSON {"message", "retry_after", "global"}.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def _refill(self, now: float) -> None:
        if self.tokens < 0:  # full at first use
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0.0: now); takes nothing."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """0.0 when a token was taken; otherwise the seconds until one is available (nothing taken)."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class FixedWindow:
    """Discord's per-route buckets: `limit` requests, then wait until `period` after the first one."""

    limit: int
    period: float
    used: int = 0
    resets_at: float = 0.0

    def take(self, now: float) -> float:
        if now >= self.resets_at:
            self.used, self.resets_at = 0, now + self.period
        if self.used < self.limit:
            self.used += 1
            return 0.0
        return self.resets_at - now

    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass
class Limiter:
    """Named buckets created on first use; `rejected` counts 429s by rule name."""

    clock: Callable[[], float] = time.monotonic
    buckets: dict[tuple[str, str], TokenBucket | FixedWindow] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    def bucket(
        self, rule: str, scope: str, factory: Callable[[], TokenBucket | FixedWindow]
    ) -> TokenBucket | FixedWindow:
        key = (rule, scope)
        found = self.buckets.get(key)
        if found is None:
            found = self.buckets[key] = factory()
        return found

    def reject(self, rule: str) -> None:
        self.rejected[rule] = self.rejected.get(rule, 0) + 1

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())


# --------------------------------------------------------------------------- Slack

SLACK_RULES: dict[str, list[tuple[str, str, float, float]]] = {
    # method: [(rule name, scope kind, rate per second, burst)]
    "chat.update": [("chat.update/workspace", "team", 50 / 60, 10)],
    "chat.postMessage": [
        ("chat.postMessage/channel", "channel", 1.0, 5),
        ("chat.postMessage/workspace", "team", 300 / 60, 50),
    ],
    "users.info": [("users.info/workspace", "team", 100 / 60, 20)],
    "conversations.replies": [("conversations.replies/workspace", "team", 50 / 60, 10)],
    "conversations.history": [("conversations.history/workspace", "team", 50 / 60, 10)],
}


def slack_check(limiter: Limiter, method: str, team: str, channel: str) -> float:
    """0.0 when the call is allowed; else the Retry-After to answer (whole seconds, at least 1)."""
    now = limiter.clock()
    buckets: list[tuple[str, TokenBucket]] = []
    for name, scope_kind, rate, burst in SLACK_RULES.get(method, []):
        scope = team if scope_kind == "team" else f"{team}/{channel}"
        bucket = limiter.bucket(name, scope, functools.partial(TokenBucket, rate, burst))
        assert isinstance(bucket, TokenBucket)
        buckets.append((name, bucket))
    # Every bucket must have room; only then is a token taken from each.
    blocked = [(name, wait) for name, bucket in buckets if (wait := bucket.wait(now)) > 0]
    if blocked:
        name, wait = max(blocked, key=lambda item: item[1])
        limiter.reject(name)
        return float(max(1, math.ceil(wait)))
    for _name, bucket in buckets:
        bucket.take(now)
    return 0.0


# --------------------------------------------------------------------------- Discord

DISCORD_ROUTE_LIMIT = 5
DISCORD_ROUTE_PERIOD = 5.0
DISCORD_GLOBAL_RATE = 50.0


@dataclass(frozen=True)
class DiscordDecision:
    retry_after: float  # 0.0: allowed
    is_global: bool
    headers: dict[str, str]


def discord_route(method: str, path: str) -> tuple[str, str, bool] | None:
    """(bucket name, major parameter, counts toward the global limit), or None when unlimited."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["interactions"]:
        return None  # interaction callbacks: no global limit, one answer per interaction anyway
    if parts[:1] == ["webhooks"] and len(parts) >= 3:
        # Interaction follow-ups and edits: per webhook (application id + token), no global limit.
        rest = "/".join("{id}" if p.isdigit() else p for p in parts[3:])
        return f"{method} webhooks/{rest}", f"{parts[1]}/{parts[2]}", False
    if parts[:1] == ["channels"] and len(parts) >= 2:
        rest = "/".join("{id}" if p.isdigit() else p for p in parts[2:])
        return f"{method} channels/{rest}", parts[1], True
    return None


def discord_check(limiter: Limiter, method: str, path: str) -> DiscordDecision:
    now = limiter.clock()
    route = discord_route(method, path)
    if route is None:
        return DiscordDecision(0.0, False, {})
    name, major, is_global_counted = route
    window = limiter.bucket(name, major, lambda: FixedWindow(DISCORD_ROUTE_LIMIT, DISCORD_ROUTE_PERIOD))
    assert isinstance(window, FixedWindow)
    if is_global_counted:
        bucket = limiter.bucket(
            "global", "bot", lambda: TokenBucket(DISCORD_GLOBAL_RATE, DISCORD_GLOBAL_RATE)
        )
        assert isinstance(bucket, TokenBucket)
        wait = bucket.take(now)
        if wait > 0:
            limiter.reject("global")
            headers = {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"}
            return DiscordDecision(max(wait, 0.001), True, headers)
    wait = window.take(now)
    reset_after = max(window.resets_at - now, 0.0)
    headers = {
        "X-RateLimit-Limit": str(window.limit),
        "X-RateLimit-Remaining": str(window.remaining()),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": _bucket_hash(name),
    }
    if wait > 0:
        limiter.reject(name)
        return DiscordDecision(wait, False, {**headers, "X-RateLimit-Scope": "user"})
    return DiscordDecision(0.0, False, headers)


def _bucket_hash(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:16]
