"""Edit budgets shared by every stream that names the same key (e.g. Slack's chat.update per workspace).

Each key is a token bucket (`burst` at once, then `rate` per second). Streams queue for a token in
arrival order, and a stream asks for its next token only after using the previous one, so the queue
is a round robin: fifty concurrent replies each get an edit in turn rather than a few of them
starving. Final texts (the ones a reader must get) are served before intermediate updates. A 429 on
any stream blocks the whole key for its Retry-After, since the platform counts the key, not the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from core.surface import EditBudget

_MIN_RATE = 1e-6  # a misconfigured rate of 0 slows a key to a crawl instead of dividing by zero


class _Bucket:
    def __init__(self, budget: EditBudget, now: float) -> None:
        self.rate = 1.0
        self.burst = 1
        self.update(budget)
        self.tokens = float(self.burst)
        self.updated = now
        self.blocked_until = now
        self.finals: deque[asyncio.Future[None]] = deque()
        self.others: deque[asyncio.Future[None]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def update(self, budget: EditBudget) -> None:
        self.rate = max(budget.rate, _MIN_RATE)
        self.burst = max(budget.burst, 1)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def can_take(self, now: float) -> bool:
        self.refill(now)
        return now >= self.blocked_until and self.tokens >= 1.0

    def next_waiter(self) -> asyncio.Future[None] | None:
        for queue in (self.finals, self.others):
            if queue:
                return queue.popleft()
        return None

    def has_waiters(self) -> bool:
        return bool(self.finals or self.others)

    def delay(self, now: float) -> float:
        """Seconds until a token may be taken."""
        self.refill(now)
        wait_for_token = (1.0 - self.tokens) / self.rate if self.tokens < 1.0 else 0.0
        return max(self.blocked_until - now, wait_for_token, 0.0)


class EditBudgets:
    """The process-wide registry of shared edit budgets."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    async def acquire(self, budget: EditBudget, *, final: bool = False) -> None:
        """Wait for one operation's worth of `budget`, first come first served (finals first)."""
        now = self._clock()
        bucket = self._bucket(budget, now)
        if not bucket.has_waiters() and bucket.can_take(now):
            bucket.tokens -= 1.0
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (bucket.finals if final else bucket.others).append(waiter)
        self._schedule(bucket)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                bucket.tokens = min(bucket.tokens + 1.0, float(bucket.burst))  # granted as the caller gave up
                self._dispatch(bucket)
            else:
                for queue in (bucket.finals, bucket.others):
                    if waiter in queue:
                        queue.remove(waiter)
            raise

    def penalize(self, budget: EditBudget, retry_after: float) -> None:
        """The platform answered 429: nobody uses this budget before `retry_after` seconds pass."""
        now = self._clock()
        bucket = self._bucket(budget, now)
        bucket.blocked_until = max(bucket.blocked_until, now + max(retry_after, 0.0))
        # Resume with one operation when the block ends, then at the sustained rate (no burst).
        bucket.tokens = 1.0
        bucket.updated = bucket.blocked_until
        if bucket.timer is not None:
            bucket.timer.cancel()
            bucket.timer = None
        self._schedule(bucket)

    def _bucket(self, budget: EditBudget, now: float) -> _Bucket:
        bucket = self._buckets.get(budget.key)
        if bucket is None:
            bucket = self._buckets[budget.key] = _Bucket(budget, now)
        else:  # an adapter may learn new limits; the latest description wins
            bucket.update(budget)
        return bucket

    def _schedule(self, bucket: _Bucket) -> None:
        if bucket.timer is not None or not bucket.has_waiters():
            return
        delay = bucket.delay(self._clock())
        bucket.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, bucket)

    def _on_timer(self, bucket: _Bucket) -> None:
        bucket.timer = None
        self._dispatch(bucket)

    def _dispatch(self, bucket: _Bucket) -> None:
        now = self._clock()
        while bucket.has_waiters() and bucket.can_take(now):
            waiter = bucket.next_waiter()
            if waiter is None or waiter.done():
                continue
            bucket.tokens -= 1.0
            waiter.set_result(None)
        self._schedule(bucket)
