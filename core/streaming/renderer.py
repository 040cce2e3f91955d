"""One reply shown as it grows: a placeholder at once, then throttled edits, then the exact final text.

The engine pushes the model's deltas; a background task turns them into surface calls, one at a time
per reply (so an older text can never land after a newer one), always sending the newest text,
at most once per `min_edit_interval` per message and within the platform's shared budgets (each
call waits for its turn there: the placeholder and final texts first, intermediate updates when
nothing more urgent is waiting).
`finish()` stops that task (never in the middle of a call) and delivers every part's final text,
retrying within `final_deadline` and falling back to new messages when edits keep failing.

When the surface limits how many replies stream at once on its edit budget (`streams_at_once`) and
that many already do, a reply is delivered whole instead: no placeholder and no edits, its final
text posted as new messages when it is finished (Slack's ~50 edits per minute per workspace cannot
stream fifty replies; posting is budgeted separately and far more generously).

A message deleted under us (`MessageGone`) sets `gone`: the engine stops generating, and nothing
more is posted, since deleting the reply is how a person says they do not want it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

from core.metrics import measured_sleep
from core.streaming.budget import EditBudgets
from core.streaming.splitting import Part, ReplySplitter
from core.surface import (
    EditBudget,
    MarkdownFlavor,
    MessageGone,
    MessageRejected,
    RateLimited,
    Surface,
    SurfaceError,
    SurfaceLimits,
)

log = logging.getLogger("threadline.streaming")

EMPTY_REPLY = "_(empty reply)_"
_RETRY_BASE = 0.1  # seconds before retrying a failed final call, doubled on each failure
_RETRY_MAX = 2.0
# Waiting for a shared budget slot is fair queueing, not failure: it extends the final deadline,
# up to this much in all (a workspace with hundreds of replies at once drains its queue slowly).
_MAX_BUDGET_QUEUEING = 900.0

_Kind = Literal["edit", "post"]


@dataclass(slots=True)
class _Deadlines:
    """When to stop trying to edit, and to post, the final text; both move with budget queueing."""

    edit: float
    post: float
    queued: float = 0.0

    def of(self, kind: _Kind) -> float:
        return self.edit if kind == "edit" else self.post

    def shift(self, seconds: float) -> None:
        self.edit += seconds
        self.post += seconds
        self.queued += seconds


_PAUSE_AFTER_FAILED_UPDATE = 0.25  # no intermediate update sooner than this after one failed


@dataclass(frozen=True, slots=True)
class _CallBudgets:
    """What each kind of call waits for: its own budgets, then the per-request one (the most shared)."""

    edit: tuple[EditBudget, ...]
    post: tuple[EditBudget, ...]
    request: EditBudget | None

    @classmethod
    def of(cls, limits: SurfaceLimits) -> _CallBudgets:
        request = (limits.request_budget,) if limits.request_budget is not None else ()
        edit = (limits.shared_budget,) if limits.shared_budget is not None else ()
        return cls(edit=edit + request, post=limits.post_budgets + request, request=limits.request_budget)

    def for_(self, kind: _Kind) -> tuple[EditBudget, ...]:
        return self.edit if kind == "edit" else self.post


@dataclass(frozen=True, slots=True)
class RenderResult:
    message_ids: list[str]  # the messages holding the reply, in reading order
    parts: list[str]  # the text each of those messages shows (as sent: rendered, notice included)
    delivered: bool  # every part's final text reached the platform


@dataclass(slots=True)
class _Message:
    id: str
    shown: str  # the last text the platform accepted for it
    last_edit: float = -math.inf  # when its last edit started (posting it is not an edit)


class _Outcome(enum.Enum):
    DONE = "done"
    FAILED = "failed"
    GONE = "gone"


class ReplyRenderer:
    def __init__(
        self,
        surface: Surface,
        budgets: EditBudgets,
        *,
        edit_interval: float | None = None,
        final_deadline: float = 30.0,
    ) -> None:
        limits = surface.limits
        self._surface = surface
        self._budgets = budgets
        self._call_budgets = _CallBudgets.of(limits)
        self._placeholder = limits.placeholder
        self._interval = limits.min_edit_interval if edit_interval is None else edit_interval
        self._final_deadline = final_deadline
        append_only = self._interval <= 0
        self._splitter = ReplySplitter(
            surface.render,
            limits.max_length,
            limits.length_unit,
            indicator=limits.streaming_indicator,
            close_fences_while_streaming=not append_only and limits.markdown is not MarkdownFlavor.PLAIN,
        )
        self._messages: list[_Message] = []
        self._settled = 0  # parts before this index show their final text
        self._deferred: set[int] = set()  # finalised parts whose final edit failed: left to finish()
        self._changed = asyncio.Event()
        self._started = False
        self._start_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_call: int | None = None  # index of the message a call in flight is for
        self._abandoned: int | None = None  # a call to this message never returned: do not edit it
        self._finishing = False
        self._gone_id: str | None = None
        self._gone = False
        self._not_before = 0.0  # no call before this time (a Retry-After on this reply)
        self._result: RenderResult | None = None
        self._streaming_against: EditBudget | None = None  # holds one of its `streams_at_once`
        self._whole = False  # delivered whole when finished: no placeholder, no edits

    @property
    def edit_interval(self) -> float:
        """Seconds between two edits of one message (0: every change is shown at once)."""
        return self._interval

    @property
    def streaming(self) -> bool:
        """False when this reply is delivered whole (too many others are streaming on its budget)."""
        return not self._whole

    @property
    def gone(self) -> bool:
        """The reply's message was deleted (or can no longer be changed): stop generating."""
        return self._gone

    @property
    def message_ids(self) -> list[str]:
        """The messages posted so far, in order (the placeholder first)."""
        return [message.id for message in self._messages]

    async def start(self) -> None:
        """Post the placeholder now, before the model is even called, and start showing progress."""
        if self._started or self._finishing:
            return
        self._started = True
        if not self._open_stream():
            self._whole = True
            self._start_done.set()
            return
        try:
            if self._placeholder:
                await self._post_placeholder()
        finally:
            self._start_done.set()
        if not self._finishing and not self._gone:
            self._task = asyncio.create_task(self._show_progress(), name="reply-renderer")

    def push(self, delta: str) -> None:
        """Add model output; returns at once (edits happen in the background)."""
        if self._finishing:
            raise RuntimeError("push() after finish()")
        if self._gone:
            return
        self._splitter.append(delta)
        self._changed.set()

    async def finish(self, notice: str | None = None) -> RenderResult:
        """Show the exact final text without the indicator, `notice` (Markdown) as a last paragraph."""
        if self._result is not None:
            return self._result
        if self._finishing:
            raise RuntimeError("finish() is already running")
        self._finishing = True
        started = time.monotonic()
        deadlines = _Deadlines(edit=started + self._final_deadline / 2, post=started + self._final_deadline)
        try:
            if self._started:
                await self._start_done.wait()
            await self._stop_progress(deadlines.edit)
            delivered = False
            if not self._gone:
                parts = self._splitter.finish(notice or None)
                if not parts:  # only whitespace came, and no notice: never leave the placeholder
                    parts = [self._splitter.notice_part(EMPTY_REPLY)]
                delivered = await self._deliver(parts, deadlines)
        finally:
            if self._streaming_against is not None:
                self._budgets.close_stream(self._streaming_against)
                self._streaming_against = None
            if self._task is not None and not self._task.done():  # finish() itself was cancelled
                self._task.cancel()
        self._result = RenderResult(
            message_ids=[m.id for m in self._messages if m.id != self._gone_id],
            parts=[m.shown for m in self._messages if m.id != self._gone_id],
            delivered=delivered,
        )
        return self._result

    async def fail(self, message: str) -> RenderResult:
        """Show an error instead of a reply: it replaces the placeholder when no text came yet.

        If some text was already shown it stays, with `message` after it as the notice.
        """
        return await self.finish(message)

    # -- while the reply grows -------------------------------------------------------------------

    def _open_stream(self) -> bool:
        limits = self._surface.limits
        budget = limits.shared_budget
        if not limits.streams_at_once or budget is None:
            return True
        if not self._budgets.open_stream(budget, limits.streams_at_once):
            return False
        self._streaming_against = budget
        return True

    async def _post_placeholder(self) -> None:
        budgets = self._call_budgets.post
        await self._budgets.acquire_all(budgets, urgent=True)
        try:
            with self._budgets.paid(budgets):
                message_id = await self._surface.post(self._placeholder)
        except MessageGone:
            self._gone = True
        except RateLimited as exc:
            self._rate_limited(exc, "post")
        except SurfaceError as exc:  # the first text will be posted instead
            log.warning("could not post the placeholder: %s", exc)
        else:
            self._messages.append(_Message(message_id, self._placeholder))

    async def _show_progress(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            while (target := self._next_target()) is not None:
                kind: _Kind = "edit" if target < len(self._messages) else "post"
                await self._wait_turn(target, kind)
                with self._budgets.paid(self._call_budgets.for_(kind)):
                    progressed = await self._update(target)
                if self._finishing or self._gone:
                    return
                if not progressed:
                    break

    def _next_target(self) -> int | None:
        """The first message whose shown text is behind, or the next message to post."""
        current = self._splitter.streaming_text()
        parts = self._splitter.finalised
        for index in range(self._settled, len(parts)):
            if index in self._deferred:
                continue
            if index >= len(self._messages) or self._messages[index].shown != parts[index].text:
                return index
            if index == self._settled:
                self._settled += 1
        index = len(parts)
        if current is None:
            return None
        if index >= len(self._messages) or self._messages[index].shown != current:
            return index
        return None

    async def _wait_turn(self, target: int, kind: _Kind) -> None:
        ready = self._not_before
        if kind == "edit":
            ready = max(ready, self._messages[target].last_edit + self._interval)
        delay = ready - time.monotonic()
        if delay > 0:
            await measured_sleep(delay)
        # An intermediate update yields to every urgent call: it is stretched out, not skipped, and
        # shows the newest text when its turn comes (a finishing reply drops it from the queue).
        final = target < len(self._splitter.finalised)
        await self._budgets.acquire_all(self._call_budgets.for_(kind), urgent=final)

    async def _update(self, target: int) -> bool:
        """Send the newest text of message `target`; False when updates should pause."""
        current = self._splitter.streaming_text()
        parts = self._splitter.finalised
        is_final = target < len(parts)
        text = parts[target].text if is_final else current
        if text is None:
            return True
        message = self._messages[target] if target < len(self._messages) else None
        if message is not None and message.shown == text:
            return True
        self._in_call = target
        try:
            if message is None:
                self._messages.append(_Message(await self._surface.post(text), text))
            else:
                message.last_edit = time.monotonic()
                await self._surface.edit(message.id, text)
                message.shown = text
        except RateLimited as exc:
            self._rate_limited(exc, "post" if message is None else "edit")
            return True
        except MessageGone:
            self._mark_gone(message)
            return False
        except SurfaceError as exc:
            log.info("update of a streamed reply failed: %s", exc)
            if is_final and message is not None:
                self._deferred.add(target)
                return True
            self._not_before = max(self._not_before, time.monotonic() + _PAUSE_AFTER_FAILED_UPDATE)
            return False
        finally:
            self._in_call = None
        return True

    async def _stop_progress(self, until: float) -> None:
        """Stop the background task, letting a call in flight finish (so its outcome is known).

        A call still in flight at `until` is cancelled; it might still land later, so its message is
        never edited again (the final text goes to a new message instead).
        """
        task = self._task
        if task is None or task.done():
            return
        if self._in_call is None:
            task.cancel()
        else:
            await asyncio.wait({task}, timeout=max(until - time.monotonic(), 0.0))
            if not task.done():
                self._abandoned = self._in_call
                log.warning("a platform call did not return in time; the final text goes to a new message")
                task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error("showing a streamed reply failed", exc_info=task.exception())

    # -- the final text ----------------------------------------------------------------------------

    async def _deliver(self, parts: list[Part], deadlines: _Deadlines) -> bool:
        """Make every message show its part's final text; False if some could not be delivered.

        Edits are tried until `deadlines.edit`; from the first part that cannot be edited, parts are
        posted as new messages until `deadlines.post`.
        """
        reposted_from: int | None = None
        superseded: list[_Message] = []
        for index, part in enumerate(parts):
            if index < len(self._messages):
                message = self._messages[index]
                if message.shown == part.text and index != self._abandoned:
                    continue
                outcome = (
                    _Outcome.FAILED
                    if index == self._abandoned
                    else await self._final_edit(message, part.text, deadlines)
                )
                if outcome is _Outcome.DONE:
                    continue
                if outcome is _Outcome.GONE:
                    return False
                # Post this part and every later one again, so the reply still reads in order.
                reposted_from, superseded = index, self._messages[index:]
                del self._messages[index:]
            if not await self._final_post(part.text, deadlines):
                if reposted_from is not None:  # those still show part of the reply
                    self._messages[reposted_from:reposted_from] = superseded
                return False
        return True

    async def _final_edit(self, message: _Message, text: str, deadlines: _Deadlines) -> _Outcome:
        for attempt in itertools.count():
            if not await self._final_turn(deadlines, "edit"):
                return _Outcome.FAILED
            message.last_edit = time.monotonic()
            try:
                async with asyncio.timeout(deadlines.edit - time.monotonic()):
                    with self._budgets.paid(self._call_budgets.edit):
                        await self._surface.edit(message.id, text)
            except RateLimited as exc:
                self._rate_limited(exc, "edit")
                continue
            except MessageGone:
                self._mark_gone(message)
                return _Outcome.GONE
            except MessageRejected as exc:
                log.warning("final edit rejected, posting the text instead: %s", exc)
                return _Outcome.FAILED
            except (SurfaceError, TimeoutError) as exc:
                log.info("final edit failed (attempt %d): %s", attempt + 1, exc)
                await self._pause_before_retry(attempt, deadlines.edit)
                continue
            message.shown = text
            return _Outcome.DONE
        raise AssertionError("unreachable")

    async def _final_post(self, text: str, deadlines: _Deadlines) -> bool:
        for attempt in itertools.count():
            if not await self._final_turn(deadlines, "post"):
                log.error("could not deliver a reply's final text before the deadline")
                return False
            try:
                async with asyncio.timeout(deadlines.post - time.monotonic()):
                    with self._budgets.paid(self._call_budgets.post):
                        message_id = await self._surface.post(text)
            except RateLimited as exc:
                self._rate_limited(exc, "post")
                continue
            except MessageGone:
                self._gone = True
                return False
            except MessageRejected as exc:
                log.error("the platform refused a reply's final text: %s", exc)
                return False
            except (SurfaceError, TimeoutError) as exc:
                log.info("final post failed (attempt %d): %s", attempt + 1, exc)
                await self._pause_before_retry(attempt, deadlines.post)
                continue
            self._messages.append(_Message(message_id, text))
            return True
        raise AssertionError("unreachable")

    async def _final_turn(self, deadlines: _Deadlines, kind: _Kind) -> bool:
        """Wait for any Retry-After and a budget slot; False past the deadline.

        The final text does not wait out the interval since the last intermediate edit (up to a
        second of a finished reply looking unfinished): the platform's budgets still pace it.
        Time spent queued for the shared budget moves the deadlines: with many replies at once the
        queue is long but always moving, and giving up on it would lose final texts.
        """
        ready = self._not_before
        if ready >= deadlines.of(kind):
            return False
        delay = ready - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        budgets = self._call_budgets.for_(kind)
        if budgets:
            queued_since = time.monotonic()
            try:
                async with asyncio.timeout(max(_MAX_BUDGET_QUEUEING - deadlines.queued, 0.0)):
                    await self._budgets.acquire_all(budgets, urgent=True)
            except TimeoutError:
                return False
            deadlines.shift(time.monotonic() - queued_since)
        return time.monotonic() < deadlines.of(kind)

    async def _pause_before_retry(self, attempt: int, until: float) -> None:
        delay = min(_RETRY_BASE * 2**attempt, _RETRY_MAX, until - time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)

    # -- shared --------------------------------------------------------------------------------------

    def _rate_limited(self, exc: RateLimited, kind: _Kind) -> None:
        """A 429 on this kind of call: its own budgets wait (not the per-request one, which the
        platform would have named as such; adapters' HTTP layers penalize that themselves)."""
        self._not_before = max(self._not_before, time.monotonic() + exc.retry_after)
        for budget in self._call_budgets.for_(kind):
            if budget != self._call_budgets.request:
                self._budgets.penalize(budget, exc.retry_after)

    def _mark_gone(self, message: _Message | None) -> None:
        self._gone = True
        if message is not None:
            self._gone_id = message.id
