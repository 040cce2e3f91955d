"""Prometheus metrics, and the small wrappers that feed them without touching the hot paths' logic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from core.surface import RateLimited, Surface, SurfaceLimits

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)

TURNS = Counter("threadline_turns", "Conversation turns by platform and outcome", ["platform", "outcome"])
TOKENS = Counter("threadline_tokens", "Tokens reported by the provider, by model", ["model", "direction"])
FIRST_VISIBLE = Histogram(
    "threadline_time_to_first_visible_token_seconds",
    "From the event to the first platform post or edit that shows the model's words",
    ["platform"],
    buckets=_LATENCY_BUCKETS,
)
REPLY_TIME = Histogram(
    "threadline_reply_seconds",
    "From the event to the final text delivered",
    ["platform"],
    buckets=_LATENCY_BUCKETS,
)
PLATFORM_CALLS = Counter("threadline_platform_calls", "Platform posts and edits", ["platform", "call"])
PLATFORM_429 = Counter("threadline_platform_rate_limited", "Platform 429 answers", ["platform"])
LLM_ERRORS = Counter("threadline_llm_errors", "LLM errors by kind", ["kind"])
STREAMS_IN_FLIGHT = Gauge("threadline_streams_in_flight", "Replies being streamed now", ["platform"])
LOOP_LAG = Histogram("threadline_event_loop_lag_seconds", "Event-loop scheduling delay", buckets=_LAG_BUCKETS)
LOOP_LAG_MAX = Gauge("threadline_event_loop_lag_max_seconds", "Largest event-loop delay since start")


class MeasuredSurface:
    """Counts a surface's calls and 429s, and notes when the first model words became visible."""

    def __init__(self, inner: Surface, platform: str, started: float, clock: Callable[[], float]) -> None:
        self._inner = inner
        self._platform = platform
        self._started = started
        self._clock = clock
        self._placeholder = inner.limits.placeholder
        self.first_visible: float | None = None

    @property
    def limits(self) -> SurfaceLimits:
        return self._inner.limits

    def render(self, markdown: str) -> str:
        return self._inner.render(markdown)

    async def post(self, text: str) -> str:
        PLATFORM_CALLS.labels(self._platform, "post").inc()
        try:
            message_id = await self._inner.post(text)
        except RateLimited:
            PLATFORM_429.labels(self._platform).inc()
            raise
        self._seen(text)
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        PLATFORM_CALLS.labels(self._platform, "edit").inc()
        try:
            await self._inner.edit(message_id, text)
        except RateLimited:
            PLATFORM_429.labels(self._platform).inc()
            raise
        self._seen(text)

    def _seen(self, text: str) -> None:
        if self.first_visible is None and text and text != self._placeholder:
            self.first_visible = self._clock()
            FIRST_VISIBLE.labels(self._platform).observe(self.first_visible - self._started)


@dataclass
class _WorstLag:
    seconds: float = 0.0


_WORST_LAG = _WorstLag()


def note_loop_lag(lag: float) -> None:
    """One sample of how late the event loop woke a sleeper."""
    lag = max(0.0, lag)
    LOOP_LAG.observe(lag)
    if lag > _WORST_LAG.seconds:
        _WORST_LAG.seconds = lag
        LOOP_LAG_MAX.set(lag)


async def measured_sleep(delay: float) -> None:
    """`asyncio.sleep(delay)`, noting how late the loop woke it.

    The pauses replies take anyway (between edits, between reads of the stream) sample the loop's lag
    where it matters, while work is being done, at no extra wake-up.
    """
    due = time.perf_counter() + delay
    await asyncio.sleep(delay)
    note_loop_lag(time.perf_counter() - due)


async def watch_event_loop(interval: float = 5.0) -> None:
    """Run forever, sampling the loop's lag when nothing else does (the process is idle).

    Every 5 s: waking an idle process costs ~0.2 ms of CPU on a small VM, and a lone reply of ~3 s
    paid three of those at 1 Hz; replies sample the lag themselves (`measured_sleep`).
    """
    while True:
        await measured_sleep(interval)
