"""A scriptable in-memory Surface that records every post and edit with its timing.

Script it by setting attributes before or during a run:

- `latency` (+ `jitter`): seconds each call takes (the outcome lands at the end of the call);
- `post_errors` / `edit_errors`: {n: error} raises `error` on the n-th post / edit call (0-based;
  the placeholder is post 0);
- `failing_edits` / `failing_posts`: raised by every edit / post while set;
- `delete(message_id)`: later edits of that message raise MessageGone.

It also checks the renderer's promise of one call in flight per message (`max_in_flight`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from core.surface import MarkdownFlavor, MessageGone, SurfaceError, SurfaceLimits

FAST_LIMITS = SurfaceLimits(
    max_length=2000,
    length_unit="chars",
    min_edit_interval=0.02,
    markdown=MarkdownFlavor.COMMONMARK,
)


@dataclass(frozen=True, slots=True)
class Call:
    kind: Literal["post", "edit"]
    message_id: str  # for a failed post: ""
    text: str
    started: float
    ended: float
    error: SurfaceError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FakeSurface:
    def __init__(
        self,
        limits: SurfaceLimits = FAST_LIMITS,
        *,
        render: Callable[[str], str] | None = None,
        latency: float = 0.0,
        jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._limits = limits
        self._render = render
        self.latency = latency
        self.jitter = jitter
        self.post_errors: dict[int, SurfaceError] = {}
        self.edit_errors: dict[int, SurfaceError] = {}
        self.failing_edits: SurfaceError | None = None
        self.failing_posts: SurfaceError | None = None
        self.calls: list[Call] = []
        self.history: dict[str, list[str]] = {}  # the texts each message showed, in order
        self.posted: list[str] = []  # message ids in the order they were posted
        self.deleted: set[str] = set()
        self.max_in_flight = 0  # most calls ever in flight at once for one message
        self._in_flight: dict[str, int] = {}
        self._posts = 0
        self._edits = 0
        self._random = random.Random(seed)

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    def render(self, markdown: str) -> str:
        return self._render(markdown) if self._render else markdown

    async def post(self, text: str) -> str:
        index, self._posts = self._posts, self._posts + 1
        started = time.monotonic()
        await self._take_time()
        error = self.post_errors.get(index) or self.failing_posts
        if error is not None:
            self.calls.append(Call("post", "", text, started, time.monotonic(), error))
            raise error
        message_id = f"m{index}"
        self.posted.append(message_id)
        self.history[message_id] = [text]
        self.calls.append(Call("post", message_id, text, started, time.monotonic()))
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        index, self._edits = self._edits, self._edits + 1
        started = time.monotonic()
        self._in_flight[message_id] = self._in_flight.get(message_id, 0) + 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight[message_id])
        try:
            await self._take_time()
        finally:
            self._in_flight[message_id] -= 1
        error: SurfaceError | None = self.edit_errors.get(index) or self.failing_edits
        if message_id in self.deleted:
            error = MessageGone(f"{message_id} was deleted")
        if error is not None:
            self.calls.append(Call("edit", message_id, text, started, time.monotonic(), error))
            raise error
        self.history[message_id].append(text)
        self.calls.append(Call("edit", message_id, text, started, time.monotonic()))

    def delete(self, message_id: str) -> None:
        self.deleted.add(message_id)

    # -- reading what happened -------------------------------------------------------------------

    def final_texts(self) -> list[str]:
        """The text each message shows now, in the order the messages were posted."""
        return [self.history[message_id][-1] for message_id in self.posted]

    def edits(self, message_id: str | None = None) -> list[Call]:
        """Edit calls (failed ones included), of one message or of all."""
        return [
            call
            for call in self.calls
            if call.kind == "edit" and (message_id is None or call.message_id == message_id)
        ]

    async def _take_time(self) -> None:
        delay = self.latency + (self._random.uniform(0, self.jitter) if self.jitter else 0.0)
        await asyncio.sleep(delay)
