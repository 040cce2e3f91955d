"""What the platform does wrong: 429s, failing or slow edits, deleted messages, refused texts."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

from core.streaming import EditBudgets, ReplyRenderer
from core.surface import EditBudget, MessageRejected, RateLimited, SurfaceError
from tests.fakes.surface import FAST_LIMITS, FakeSurface

INDICATOR = FAST_LIMITS.streaming_indicator
WORDS = [f"w{i} " for i in range(80)]
TEXT = "".join(WORDS)


async def stream(renderer: ReplyRenderer, deltas: list[str], gap: float = 0.001) -> None:
    await renderer.start()
    for delta in deltas:
        if renderer.gone:
            return
        renderer.push(delta)
        await asyncio.sleep(gap)


async def test_retry_after_is_honoured_and_the_final_text_still_arrives() -> None:
    surface = FakeSurface()
    surface.edit_errors[1] = RateLimited(0.3)
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, WORDS)
    result = await renderer.finish()
    assert result.parts == [TEXT] and result.delivered
    limited = next(call for call in surface.calls if isinstance(call.error, RateLimited))
    later = [call for call in surface.calls if call.started > limited.started]
    assert later, "the reply went on after the 429"
    assert min(call.started for call in later) >= limited.ended + 0.3 - 0.005


async def test_a_429_on_one_stream_pauses_every_stream_of_the_budget() -> None:
    budget = EditBudget(key="slack:T1:chat.update", rate=200.0, burst=20)
    shared = dataclasses.replace(FAST_LIMITS, shared_budget=budget)
    first, second = FakeSurface(shared), FakeSurface(shared)
    first.edit_errors[1] = RateLimited(0.25)
    budgets = EditBudgets()
    one, two = ReplyRenderer(first, budgets), ReplyRenderer(second, budgets)
    await asyncio.gather(stream(one, WORDS), stream(two, WORDS))
    results = await asyncio.gather(one.finish(), two.finish())
    assert [r.parts for r in results] == [[TEXT], [TEXT]]
    limited = next(call for call in first.calls if isinstance(call.error, RateLimited))
    budgeted = [c for s in (first, second) for c in s.calls if c.kind == "edit"]
    blocked = [c for c in budgeted if limited.ended < c.started < limited.ended + 0.25 - 0.005]
    assert blocked == []
    assert any(c.started > limited.ended for c in second.calls)


async def test_failing_edits_are_retried_then_the_final_text_is_posted_within_the_deadline() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets(), final_deadline=0.6)
    await stream(renderer, WORDS[:10])
    surface.failing_edits = SurfaceError("502 from the platform")
    began = time.monotonic()
    result = await renderer.finish()
    assert time.monotonic() - began < 0.6
    final_edits = [c for c in surface.edits() if c.started >= began]
    assert len(final_edits) >= 2, "the final edit was retried"
    assert result.delivered and result.parts == ["".join(WORDS[:10])]
    assert result.message_ids == [surface.posted[-1]] and surface.posted[-1] != "m0"


async def test_a_final_edit_that_fails_for_a_while_is_retried_in_place() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets(), final_deadline=5.0)
    await stream(renderer, WORDS[:10])
    failures = len(surface.edits())
    surface.edit_errors.update({failures: SurfaceError("timeout"), failures + 1: SurfaceError("timeout")})
    result = await renderer.finish()
    assert result.message_ids == ["m0"] and result.parts == ["".join(WORDS[:10])]
    assert len(surface.posted) == 1


async def test_a_rejected_final_edit_is_not_retried_but_posted() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, WORDS[:10])
    surface.failing_edits = MessageRejected("msg_too_long")
    began = time.monotonic()
    result = await renderer.finish()
    assert len([c for c in surface.edits() if c.started >= began]) == 1
    assert result.message_ids == ["m1"] and result.parts == ["".join(WORDS[:10])] and result.delivered


async def test_when_a_middle_part_cannot_be_edited_the_rest_is_posted_again_in_order() -> None:
    surface = FakeSurface(dataclasses.replace(FAST_LIMITS, max_length=60))
    renderer = ReplyRenderer(surface, EditBudgets(), final_deadline=0.4)
    await stream(renderer, WORDS)
    surface.failing_edits = SurfaceError("edits are down")
    result = await renderer.finish()
    assert result.delivered
    assert "".join(result.parts) == TEXT  # the reply reads in order across the messages it names
    assert result.message_ids == sorted(result.message_ids, key=surface.posted.index)


async def test_a_deleted_placeholder_sets_gone_and_nothing_more_is_posted() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await renderer.start()
    surface.delete("m0")
    await stream(renderer, WORDS)
    assert renderer.gone
    result = await renderer.finish("Stopped.")
    assert not result.delivered and result.message_ids == [] and surface.posted == ["m0"]
    assert len(surface.edits()) == 1  # the edit that found the message gone, then nothing


async def test_a_message_deleted_after_the_stream_is_detected_by_the_final_edit() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, WORDS[:5])
    surface.delete("m0")
    result = await renderer.finish()
    assert renderer.gone and not result.delivered and surface.posted == ["m0"]


async def test_out_of_order_edits_are_impossible_on_a_slow_surface() -> None:
    surface = FakeSurface(latency=0.005, jitter=0.04, seed=7)
    renderer = ReplyRenderer(surface, EditBudgets(), edit_interval=0.005)
    await stream(renderer, WORDS, gap=0.001)
    result = await renderer.finish()
    assert surface.max_in_flight == 1
    shown = [text.removesuffix(INDICATOR) for text in surface.history["m0"][1:]]
    assert len(shown) >= 3
    assert all(b.startswith(a) for a, b in itertools.pairwise(shown))
    assert result.parts == [TEXT]


async def test_finish_during_a_slow_edit_waits_for_it_then_sends_the_final_text() -> None:
    surface = FakeSurface(latency=0.15)
    renderer = ReplyRenderer(surface, EditBudgets())
    await renderer.start()
    renderer.push("first")
    await asyncio.sleep(0.05)  # the edit showing "first" is in flight
    renderer.push(" second")
    result = await renderer.finish()
    assert surface.history["m0"][1:] == ["first" + INDICATOR, "first second"]
    assert surface.max_in_flight == 1 and result.parts == ["first second"]


async def test_intermediate_failures_do_not_stop_the_reply() -> None:
    surface = FakeSurface()
    surface.edit_errors.update({n: SurfaceError("flaky") for n in (0, 2, 3)})
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, WORDS)
    result = await renderer.finish()
    assert result.parts == [TEXT] and result.delivered


async def test_when_nothing_can_be_delivered_finish_reports_it_within_the_deadline() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets(), final_deadline=0.4)
    await stream(renderer, WORDS[:5])
    surface.failing_edits = SurfaceError("down")
    surface.failing_posts = SurfaceError("down")
    began = time.monotonic()
    result = await renderer.finish()
    assert time.monotonic() - began < 0.45
    assert not result.delivered and result.message_ids == ["m0"]


async def test_a_call_that_never_returns_is_abandoned_and_the_final_text_posted() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets(), final_deadline=0.4)
    await renderer.start()
    surface.latency = 30.0  # the next call hangs
    renderer.push("first")
    await asyncio.sleep(0.05)
    assert surface.max_in_flight == 1
    surface.latency = 0.0
    renderer.push(" second")
    began = time.monotonic()
    result = await renderer.finish()
    assert time.monotonic() - began < 0.45
    assert result.delivered and result.parts == ["first second"] and result.message_ids == ["m1"]
    assert surface.edits() == []  # the hung edit never completed, and m0 was not edited again
