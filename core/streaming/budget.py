"""Budgets shared by every stream (and request) that names the same key.

Each key is a token bucket (`burst` at once, then `rate` per second); a budget with a `window` also
never grants more than `burst` operations in any `window` seconds. Callers queue for a token in
arrival order, and a stream asks for its next token only after using the previous one, so the queue
is a round robin: fifty concurrent replies each get an edit in turn rather than a few of them
starving. Urgent operations (final texts, placeholders, any request made outside the renderer) are
served before intermediate updates, so intermediate updates stretch out while a budget is busy and
cost nothing that a reader must wait for. A 429 on any stream blocks the whole key for its
Retry-After, since the platform counts the key, not the stream.

Two layers may pace one request: the renderer, which knows what is urgent, and an adapter's HTTP
layer, which sees every request (also those the platform's SDK makes on its own, such as retries).
The renderer takes its tokens first and makes its call inside `paid(...)`; the HTTP layer's
`charge(...)` then takes nothing more for that call's first request, so each request costs one
token, granted in the renderer's order and just before it leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from core.surface import EditBudget

_MIN_RATE = 1e-6  # a misconfigured rate of 0 slows a key to a crawl instead of dividing by zero
# A token the renderer took pays for its call's request only if the request leaves this soon after;
# one held up longer (the SDK waited on a bucket of its own) is charged again when it leaves.
PAID_TOKEN_LIFETIME = 0.05


@dataclass(slots=True)
class _Credit:
    keys: set[str]  # budgets already paid for the next request of this call
    until: float  # monotonic time after which the credit is worth nothing


_credit: ContextVar[_Credit | None] = ContextVar("threadline_budget_credit", default=None)


class _Bucket:
    def __init__(self, budget: EditBudget, now: float) -> None:
        self.rate = 1.0
        self.burst = 1
        self.window = 0.0
        self.update(budget)
        self.tokens = float(self.burst)
        self.updated = now
        self.blocked_until = now
        self.recent: deque[float] = deque()  # grant times, the last `burst` (window budgets only)
        self.urgent: deque[asyncio.Future[None]] = deque()
        self.others: deque[asyncio.Future[None]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.reserved = 0  # replies streaming on this budget, each owed a token for its final text

    def update(self, budget: EditBudget) -> None:
        self.rate = max(budget.rate, _MIN_RATE)
        self.burst = max(budget.burst, 1)
        self.window = max(budget.window, 0.0)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def delay(self, now: float, urgent: bool = True) -> float:
        """Seconds until a token may be taken (0.0: now); an intermediate update also leaves the
        tokens reserved for the final texts of the replies streaming on this budget."""
        self.refill(now)
        wait = self.blocked_until - now
        needed = 1.0 if urgent else 1.0 + min(self.reserved, self.burst - 1)
        if self.tokens < needed:
            wait = max(wait, (needed - self.tokens) / self.rate)
        if self.window > 0 and len(self.recent) >= self.burst:
            wait = max(wait, self.recent[-self.burst] + self.window - now)
        return max(wait, 0.0)

    def can_take(self, now: float, urgent: bool = True) -> bool:
        return self.delay(now, urgent) <= 0.0

    def next_is_urgent(self) -> bool:
        return bool(self.urgent)

    def take(self, now: float) -> None:
        self.tokens -= 1.0
        if self.window > 0:
            self.recent.append(now)
            while len(self.recent) > self.burst:
                self.recent.popleft()

    def give_back(self) -> None:
        """A token granted to a caller that gave up (a window slot stays used: the safe side)."""
        self.tokens = min(self.tokens + 1.0, float(self.burst))

    def next_waiter(self) -> asyncio.Future[None] | None:
        for queue in (self.urgent, self.others):
            if queue:
                return queue.popleft()
        return None

    def has_waiters(self) -> bool:
        return bool(self.urgent or self.others)


class EditBudgets:
    """The process-wide registry of shared budgets."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def open_stream(self, budget: EditBudget, at_once: int) -> bool:
        """Count one more reply streaming on `budget`, unless `at_once` already are; while it streams,
        intermediate updates leave a token for its final text."""
        bucket = self._bucket(budget, self._clock())
        if bucket.reserved >= at_once:
            return False
        bucket.reserved += 1
        return True

    def close_stream(self, budget: EditBudget) -> None:
        bucket = self._bucket(budget, self._clock())
        bucket.reserved = max(bucket.reserved - 1, 0)
        self._dispatch(bucket)

    async def acquire(self, budget: EditBudget, *, urgent: bool = False) -> None:
        """Wait for one operation's worth of `budget`, first come first served (urgent ones first)."""
        now = self._clock()
        bucket = self._bucket(budget, now)
        if not bucket.has_waiters() and bucket.can_take(now, urgent):
            bucket.take(now)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (bucket.urgent if urgent else bucket.others).append(waiter)
        self._schedule(bucket)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                bucket.give_back()  # granted as the caller gave up
                self._dispatch(bucket)
            else:
                for queue in (bucket.urgent, bucket.others):
                    if waiter in queue:
                        queue.remove(waiter)
            raise

    async def acquire_all(self, budgets: Sequence[EditBudget], *, urgent: bool = False) -> None:
        """`acquire` each of `budgets` in turn (the most contended, e.g. a global one, last)."""
        for budget in budgets:
            await self.acquire(budget, urgent=urgent)

    @contextmanager
    def paid(self, budgets: Iterable[EditBudget]) -> Iterator[None]:
        """Within this block, the next `charge` of each of `budgets` is free: it was acquired already."""
        token = _credit.set(_Credit({budget.key for budget in budgets}, self._clock() + PAID_TOKEN_LIFETIME))
        try:
            yield
        finally:
            _credit.reset(token)

    async def charge(self, budget: EditBudget, *, urgent: bool = True) -> None:
        """Pay for one request about to leave: nothing if the caller paid already (`paid`), else `acquire`."""
        credit = _credit.get()
        if credit is not None and budget.key in credit.keys:
            credit.keys.discard(budget.key)  # it pays for one request only
            if self._clock() <= credit.until:
                return
        await self.acquire(budget, urgent=urgent)

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
        delay = bucket.delay(self._clock(), bucket.next_is_urgent())
        bucket.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, bucket)

    def _on_timer(self, bucket: _Bucket) -> None:
        bucket.timer = None
        self._dispatch(bucket)

    def _dispatch(self, bucket: _Bucket) -> None:
        now = self._clock()
        while bucket.has_waiters() and bucket.can_take(now, bucket.next_is_urgent()):
            waiter = bucket.next_waiter()
            if waiter is None or waiter.done():
                continue
            bucket.take(now)
            waiter.set_result(None)
        self._schedule(bucket)
