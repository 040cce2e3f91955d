"""Shared edit budgets: token buckets, fair order, finals first, 429 penalties; 50 streams on one key."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from core.streaming import EditBudgets, ReplyRenderer
from core.streaming.budget import PAID_TOKEN_LIFETIME
from core.surface import EditBudget
from tests.fakes.surface import FAST_LIMITS, FakeSurface


async def timed_acquires(budgets: EditBudgets, budget: EditBudget, count: int) -> list[float]:
    began = time.monotonic()
    times = []
    for _ in range(count):
        await budgets.acquire(budget)
        times.append(time.monotonic() - began)
    return times


async def test_burst_is_immediate_then_the_rate_applies() -> None:
    budget = EditBudget(key="k", rate=20.0, burst=3)
    times = await timed_acquires(EditBudgets(), budget, 7)
    assert times[2] < 0.01
    assert 0.19 <= times[6] < 0.26  # four more at 20/s


async def test_waiters_are_served_in_arrival_order_finals_first() -> None:
    budgets = EditBudgets()
    budget = EditBudget(key="k", rate=50.0, burst=1)
    await budgets.acquire(budget)
    order: list[str] = []

    async def wait(name: str, final: bool) -> None:
        await budgets.acquire(budget, urgent=final)
        order.append(name)

    tasks = [asyncio.create_task(wait(name, False)) for name in ("a", "b", "c")]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(wait("final", True)))
    await asyncio.gather(*tasks)
    assert order == ["final", "a", "b", "c"]


async def test_a_penalty_blocks_the_key_for_retry_after_only() -> None:
    budgets = EditBudgets()
    slack, other = EditBudget(key="slack", rate=100.0, burst=5), EditBudget(key="other", rate=100.0, burst=5)
    budgets.penalize(slack, 0.2)
    began = time.monotonic()
    await budgets.acquire(other)
    assert time.monotonic() - began < 0.01
    await budgets.acquire(slack)
    assert time.monotonic() - began >= 0.2 - 0.002


async def test_a_waiter_that_gives_up_does_not_hold_up_the_others() -> None:
    budgets = EditBudgets()
    budget = EditBudget(key="k", rate=10.0, burst=1)
    await budgets.acquire(budget)
    quitter = asyncio.create_task(budgets.acquire(budget))
    stayer = asyncio.create_task(budgets.acquire(budget))
    await asyncio.sleep(0.01)
    quitter.cancel()
    began = time.monotonic()
    await stayer
    assert time.monotonic() - began < 0.12  # the next token (0.1 s after the first) went to it
    await asyncio.wait_for(budgets.acquire(budget), 0.15)  # and the token after that exists too


def most_in_any_window(times: list[float], rate: float, burst: int, jitter: float) -> float:
    """max over windows of (calls in window) − (burst + rate·(window + jitter)); ≤ 0 means within."""
    times = sorted(times)
    worst = float("-inf")
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - (burst + rate * (times[j] - start + jitter)))
    return worst


async def test_fifty_streams_share_one_budget_fairly_without_exceeding_it() -> None:
    edit_budget = EditBudget(key="slack:T1:chat.update", rate=300.0, burst=10)
    post_budget = EditBudget(key="slack:T1:chat.postMessage", rate=200.0, burst=10)
    limits = dataclasses.replace(
        FAST_LIMITS, shared_budget=edit_budget, post_budgets=(post_budget,), max_length=120
    )
    budgets = EditBudgets()
    surfaces = [FakeSurface(limits, latency=0.002, seed=n) for n in range(50)]
    words = [f"w{n} " for n in range(50)]  # ~190 chars: each reply continues in a second message

    async def one_reply(surface: FakeSurface) -> list[str]:
        renderer = ReplyRenderer(surface, budgets)
        await renderer.start()
        for word in words:
            renderer.push(word)
            await asyncio.sleep(0.008)
        return (await renderer.finish()).parts

    results = await asyncio.gather(*(one_reply(surface) for surface in surfaces))

    assert all("".join(parts) == "".join(words) for parts in results)
    edits = [c.started for s in surfaces for c in s.calls if c.kind == "edit"]
    posts = [c.started for s in surfaces for c in s.calls if c.kind == "post"]
    assert len(edits) > 100 and len(posts) == 100  # a placeholder and a continuation each
    # Allow 10 ms for tasks to start their call after being granted a slot.
    assert most_in_any_window(edits, edit_budget.rate, edit_budget.burst, jitter=0.01) <= 0
    assert most_in_any_window(posts, post_budget.rate, post_budget.burst, jitter=0.01) <= 0
    for surface in surfaces:
        intermediate = [text for text in surface.history["m0"][1:-1] if text.endswith(" ▍")]
        assert intermediate, "every stream showed progress before its end"


async def test_queueing_for_a_busy_budget_never_loses_a_final_text() -> None:
    """30 replies end together on a budget of 20 edits/s: the last final waits ~1.5 s in the queue,
    three times the final deadline, and must still be delivered (queueing is not failure)."""
    budgets = EditBudgets()
    limits = dataclasses.replace(FAST_LIMITS, shared_budget=EditBudget(key="ws", rate=20.0, burst=1))
    surfaces = [FakeSurface(limits) for _ in range(30)]
    renderers = [ReplyRenderer(surface, budgets, final_deadline=0.5) for surface in surfaces]
    await asyncio.gather(*(renderer.start() for renderer in renderers))
    for index, renderer in enumerate(renderers):
        renderer.push(f"answer number {index}")
    results = await asyncio.gather(*(renderer.finish() for renderer in renderers))
    assert all(result.delivered for result in results)
    assert [surface.final_texts() for surface in surfaces] == [[f"answer number {i}"] for i in range(30)]


async def test_a_window_budget_never_grants_more_than_its_burst_in_any_window() -> None:
    budget = EditBudget.windowed("route", 3, 0.2)
    times = await timed_acquires(EditBudgets(), budget, 7)
    assert times[2] < 0.01  # three at once
    assert all(b - a >= 0.2 - 0.002 for a, b in zip(times, times[3:], strict=False))


async def test_a_paid_call_is_not_charged_twice_but_its_retry_is() -> None:
    budgets = EditBudgets()
    budget = EditBudget(key="global", rate=10.0, burst=1)
    await budgets.acquire(budget, urgent=True)  # the renderer's turn: the only token
    began = time.monotonic()
    with budgets.paid([budget]):
        await budgets.charge(budget)  # the request leaving: already paid
        assert time.monotonic() - began < 0.01
        await budgets.charge(budget)  # a second request of the same call (a retry) pays
    assert time.monotonic() - began >= 0.1 - 0.002
    await asyncio.sleep(PAID_TOKEN_LIFETIME + 0.1)
    with budgets.paid([budget]):  # the renderer paid, but the request left too late: it pays again
        await asyncio.sleep(PAID_TOKEN_LIFETIME + 0.01)
        began = time.monotonic()
        await budgets.charge(budget)
        await budgets.charge(budget)
    assert time.monotonic() - began >= 0.1 - 0.002


async def test_intermediate_updates_wait_while_placeholders_and_finals_go_first() -> None:
    """A per-request budget far below what 30 streams want: 5 replies that end while 25 others still
    stream get their final texts at once, and 10 new ones their placeholders; the others' updates
    take only what is left."""
    request = EditBudget(key="global", rate=100.0, burst=2)
    limits = dataclasses.replace(FAST_LIMITS, request_budget=request)
    budgets = EditBudgets()
    surfaces = [FakeSurface(limits) for _ in range(40)]
    renderers = [ReplyRenderer(surface, budgets) for surface in surfaces]
    await asyncio.gather(*(renderer.start() for renderer in renderers[:30]))

    async def stream(renderer: ReplyRenderer, index: int, steps: int) -> None:
        for step in range(steps):
            renderer.push(f"{' ' if step else ''}{index}.{step}")
            await asyncio.sleep(0.01)

    streaming = [asyncio.create_task(stream(renderers[i], i, 60)) for i in range(5, 30)]
    await asyncio.gather(*(stream(renderers[i], i, 20) for i in range(5)))
    ending = time.monotonic()
    ended = await asyncio.gather(*(renderer.finish() for renderer in renderers[:5]))
    finals_took = time.monotonic() - ending
    starting = time.monotonic()
    await asyncio.gather(*(renderer.start() for renderer in renderers[30:]))
    placeholders_took = time.monotonic() - starting
    await asyncio.gather(*streaming)
    rest = await asyncio.gather(*(renderer.finish() for renderer in renderers[5:]))

    assert all(result.delivered for result in [*ended, *rest])
    steps = [20] * 5 + [60] * 25
    assert [s.final_texts() for s in surfaces[:30]] == [
        [" ".join(f"{i}.{step}" for step in range(steps[i]))] for i in range(30)
    ]
    # 5 finals, then 10 placeholders, at 100/s: not behind 25 streams' intermediate updates
    assert finals_took < 0.15 and placeholders_took < 0.22
    calls = sorted(c.started for s in surfaces for c in s.calls)
    assert most_in_any_window(calls, request.rate, request.burst, jitter=0.01) <= 0


async def test_intermediate_updates_leave_a_token_for_each_streaming_replys_final_text() -> None:
    budget = EditBudget(key="ws:edits", rate=0.01, burst=5)  # practically no refill during the test
    budgets = EditBudgets()
    assert budgets.open_stream(budget, 3) and budgets.open_stream(budget, 3)
    assert budgets.open_stream(budget, 3)
    assert not budgets.open_stream(budget, 3)  # a fourth reply is delivered whole instead
    for _ in range(2):  # 5 tokens, 3 owed to final texts: two intermediate updates go at once
        await asyncio.wait_for(budgets.acquire(budget), 0.1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(budgets.acquire(budget), 0.1)
    for _ in range(3):  # the final texts still get theirs
        await asyncio.wait_for(budgets.acquire(budget, urgent=True), 0.1)
    budgets.close_stream(budget)
    assert budgets.open_stream(budget, 3)
