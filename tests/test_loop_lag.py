"""The event-loop lag metric: the pauses replies take anyway measure how late the loop wakes them."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from core.metrics import measured_sleep, note_loop_lag


def _lag_samples() -> float:
    return REGISTRY.get_sample_value("threadline_event_loop_lag_seconds_count") or 0.0


def _lag_max() -> float:
    return REGISTRY.get_sample_value("threadline_event_loop_lag_max_seconds") or 0.0


async def test_a_pause_the_loop_wakes_late_is_counted_as_its_lag() -> None:
    samples = _lag_samples()
    loop = asyncio.get_running_loop()
    loop.call_later(0.005, time.sleep, 0.15)  # a callback that blocks the loop for 150 ms
    started = time.perf_counter()
    await measured_sleep(0.02)
    assert time.perf_counter() - started >= 0.15
    assert _lag_samples() == samples + 1
    assert _lag_max() >= 0.12  # woke ~135 ms after it was due


async def test_a_pause_on_time_adds_a_sample_and_leaves_the_worst_alone() -> None:
    note_loop_lag(0.5)
    worst, samples = _lag_max(), _lag_samples()
    await measured_sleep(0.001)
    assert _lag_samples() == samples + 1
    assert _lag_max() == worst >= 0.5
