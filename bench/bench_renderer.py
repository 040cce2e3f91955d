"""Benchmark of the streaming renderer: CPU per delta and per edit, delay from a delta to its edit.

N concurrent simulated replies (one word per delta, ~150 deltas, ~870 characters, 20 ms apart)
stream into an in-memory surface. The renderer's CPU is metered directly: the time spent in
`push()`, in `start()` and `finish()`, and in every step of each renderer's background task (its
coroutine is wrapped when the renderer creates it). The process CPU of the whole run (driver,
event loop, sleeps) is reported beside it.

    .venv/bin/python -m bench.bench_renderer [--fast] [--profile NAME] [--streams 1,10,50,500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Coroutine, Generator, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

from core.streaming import EditBudgets, ReplyRenderer
from core.surface import EditBudget, MarkdownFlavor, SurfaceLimits

PROFILES = {
    # Discord: 2,000 characters, about one edit per second per message.
    "discord": SurfaceLimits(
        max_length=2000, length_unit="chars", min_edit_interval=1.0, markdown=MarkdownFlavor.COMMONMARK
    ),
    # Slack: ~3,500 bytes, chat.update ~50/min per workspace (each simulated reply its own workspace).
    "slack": SurfaceLimits(
        max_length=3500,
        length_unit="utf8_bytes",
        min_edit_interval=1.0,
        markdown=MarkdownFlavor.SLACK_MRKDWN,
        shared_budget=EditBudget(key="slack:T:chat.update", rate=50 / 60, burst=5),
    ),
    # A terminal: no throttling, every delta is an edit (the renderer's worst case for CPU).
    "terminal": SurfaceLimits(
        max_length=1_000_000,
        length_unit="chars",
        min_edit_interval=0.0,
        markdown=MarkdownFlavor.PLAIN,
        streaming_indicator="",
        placeholder="",
    ),
}
VOCABULARY = [
    "the", "model", "reply", "streams", "into", "chat", "while", "people", "read", "it", "message",
    "by", "edits", "and", "code", "platform", "renders", "a", "thread", "answer",
]  # fmt: skip
RESULTS = Path(__file__).parent / "results" / "renderer.json"


class MemorySurface:
    """Keeps, per call, when it happened and how much of the reply it showed."""

    def __init__(self, limits: SurfaceLimits) -> None:
        self._limits = limits
        self._indicator = limits.streaming_indicator
        self.shown: list[tuple[float, int]] = []  # (time, characters of the reply shown)
        self._count = 0

    @property
    def limits(self) -> SurfaceLimits:
        return self._limits

    def render(self, markdown: str) -> str:
        return markdown

    async def post(self, text: str) -> str:
        self._count += 1
        self._record(text)
        return str(self._count)

    async def edit(self, message_id: str, text: str) -> None:
        self._record(text)

    def _record(self, text: str) -> None:
        if text != self._limits.placeholder:
            visible = text.removesuffix(self._indicator) if self._indicator else text
            self.shown.append((time.perf_counter(), len(visible)))


class CpuMeter:
    def __init__(self) -> None:
        self.seconds = 0.0


class Metered(Coroutine[Any, Any, Any]):
    """A coroutine whose every step adds its CPU time to a meter."""

    def __init__(self, inner: Coroutine[Any, Any, Any], meter: CpuMeter) -> None:
        self._inner = inner
        self._meter = meter

    def send(self, value: Any) -> Any:
        started = time.process_time()
        try:
            return self._inner.send(value)
        finally:
            self._meter.seconds += time.process_time() - started

    def throw(self, *args: Any) -> Any:
        started = time.process_time()
        try:
            return self._inner.throw(*args)
        finally:
            self._meter.seconds += time.process_time() - started

    def close(self) -> None:
        self._inner.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield from self)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return self.send(None)


@contextlib.contextmanager
def metering_background_tasks(meter: CpuMeter) -> Iterator[None]:
    """Wrap the coroutine of every renderer background task created meanwhile."""
    create_task = asyncio.create_task

    def metered_create_task(coro: Coroutine[Any, Any, Any], **kwargs: Any) -> asyncio.Task[Any]:
        if getattr(coro, "__qualname__", "") == "ReplyRenderer._show_progress":
            coro = Metered(coro, meter)
        return create_task(coro, **kwargs)

    with mock.patch.object(asyncio, "create_task", metered_create_task):
        yield


@dataclass(frozen=True, slots=True)
class Row:
    profile: str
    streams: int
    deltas: int
    calls: int
    renderer_cpu_per_delta_us: float  # all the renderer's CPU divided by the deltas
    renderer_cpu_per_call_us: float  # the same divided by the posts and edits it made
    renderer_cpu_per_reply_ms: float
    process_cpu_per_reply_ms: float  # everything: driver, event loop, renderer
    delay_median_ms: float
    delay_p99_ms: float
    wall_s: float


def reply_words(seed: int, count: int) -> list[str]:
    chooser = random.Random(seed)
    return [chooser.choice(VOCABULARY) + " " for _ in range(count)]


async def one_reply(
    renderer: ReplyRenderer, words: list[str], gap: float, meter: CpuMeter, arrivals: list[tuple[float, int]]
) -> None:
    await asyncio.create_task(Metered(renderer.start(), meter))
    length = 0
    for word in words:
        length += len(word)
        arrivals.append((time.perf_counter(), length))
        started = time.process_time()
        renderer.push(word)
        meter.seconds += time.process_time() - started
        await asyncio.sleep(gap)
    await asyncio.create_task(Metered(renderer.finish(), meter))


@dataclass(slots=True)
class Run:
    renderer_cpu: float
    process_cpu: float
    wall: float
    surfaces: list[MemorySurface]
    arrivals: list[list[tuple[float, int]]]


async def run(limits: SurfaceLimits, streams: int, words: int, gap: float) -> Run:
    budgets, meter = EditBudgets(), CpuMeter()
    surfaces = [MemorySurface(per_stream(limits, n)) for n in range(streams)]
    arrivals: list[list[tuple[float, int]]] = [[] for _ in range(streams)]
    renderers = [ReplyRenderer(surface, budgets) for surface in surfaces]
    cpu, wall = time.process_time(), time.perf_counter()
    with metering_background_tasks(meter):
        await asyncio.gather(
            *(
                one_reply(renderer, reply_words(n, words), gap, meter, arrivals[n])
                for n, renderer in enumerate(renderers)
            )
        )
    return Run(meter.seconds, time.process_time() - cpu, time.perf_counter() - wall, surfaces, arrivals)


def per_stream(limits: SurfaceLimits, n: int) -> SurfaceLimits:
    """Each simulated reply in its own workspace: a shared budget is per workspace."""
    budget = limits.shared_budget
    return replace(limits, shared_budget=replace(budget, key=f"{budget.key}:{n}")) if budget else limits


def delays(surface: MemorySurface, arrivals: list[tuple[float, int]]) -> list[float]:
    """For each delta, seconds until a call first showed the reply up to and including it."""
    found, call = [], 0
    for arrived, length in arrivals:
        while call < len(surface.shown) and surface.shown[call][1] < length:
            call += 1
        if call < len(surface.shown):
            found.append(max(0.0, surface.shown[call][0] - arrived))
    return found


def measure(profile: str, streams: int, words: int, gap: float) -> Row:
    result = asyncio.run(run(PROFILES[profile], streams, words, gap))
    deltas = streams * words
    calls = sum(len(surface.shown) for surface in result.surfaces)
    waited = sorted(d for s, a in zip(result.surfaces, result.arrivals, strict=True) for d in delays(s, a))
    return Row(
        profile=profile,
        streams=streams,
        deltas=deltas,
        calls=calls,
        renderer_cpu_per_delta_us=result.renderer_cpu / deltas * 1e6,
        renderer_cpu_per_call_us=result.renderer_cpu / max(calls, 1) * 1e6,
        renderer_cpu_per_reply_ms=result.renderer_cpu / streams * 1e3,
        process_cpu_per_reply_ms=result.process_cpu / streams * 1e3,
        delay_median_ms=statistics.median(waited) * 1e3,
        delay_p99_ms=waited[min(len(waited) - 1, int(len(waited) * 0.99))] * 1e3,
        wall_s=result.wall,
    )


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'profile':<9}{'N':>5}{'deltas':>8}{'calls':>7}{'µs/delta':>10}{'µs/call':>9}"
        f"{'ms/reply':>10}{'proc ms/reply':>15}{'delay p50 ms':>14}{'p99 ms':>9}{'wall s':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r.profile:<9}{r.streams:>5}{r.deltas:>8}{r.calls:>7}{r.renderer_cpu_per_delta_us:>10.1f}"
            f"{r.renderer_cpu_per_call_us:>9.1f}{r.renderer_cpu_per_reply_ms:>10.2f}"
            f"{r.process_cpu_per_reply_ms:>15.2f}{r.delay_median_ms:>14.1f}{r.delay_p99_ms:>9.1f}"
            f"{r.wall_s:>8.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", choices=[*PROFILES, "all"], default="all")
    parser.add_argument("--streams", default="1,10,50,500", help="comma-separated concurrency levels")
    parser.add_argument("--deltas", type=int, default=150, help="deltas (words) per reply")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between two deltas of a reply")
    parser.add_argument("--fast", action="store_true", help="deltas 2 ms apart instead of 20 ms")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    gap = 0.002 if args.fast else args.gap
    profiles = list(PROFILES) if args.profile == "all" else [args.profile]
    levels = [int(level) for level in args.streams.split(",")]
    for profile in profiles:  # first-run costs (imports, regex compilation) are not per reply
        asyncio.run(run(PROFILES[profile], 2, 20, 0.0))
    rows = [measure(profile, streams, args.deltas, gap) for profile in profiles for streams in levels]
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "streaming renderer",
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "deltas_per_reply": args.deltas,
        "gap_s": gap,
        "chars_per_reply": len("".join(reply_words(0, args.deltas))),
        "rows": [asdict(row) for row in rows],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
