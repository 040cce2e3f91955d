"""The measurements: overhead per reply, concurrency, history growth, start-up."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.history import Stored, prefill_postgres, prefill_sqlite, recreate_postgres
from bench.platforms import BenchDiscord, BenchSlack, Sent
from bench.procs import Bot, ModelProc, cpu_seconds, lag_summary, machine_busy_seconds, reset_peak
from bench.world import Platform, Reply, World
from core.types import ConversationKey

STREAM_SECONDS = 0.02 * 150  # one answer streams for about this long
DISCORD_BUCKET_WINDOW = 5.5  # s: Discord's per-channel buckets allow 5 requests per 5 s
SLACK_SPACING = 2.6  # s between overhead samples on Slack: the workspace's chat.update budget refills
DISCORD_SPACING = 0.3
# Seconds a concurrency row waits for its replies; a text not exact by then counts as not exact.
SETTLE_LIMIT = 90.0  # Slack: 50 final texts alone need ≥ 48 s of chat.update budget (50/min, burst 10)


@dataclass
class Bench:
    model: ModelProc
    root: Path
    postgres: str | None  # admin URL of a PostgreSQL server, or None
    say: Callable[[str], None]
    quick: bool = False  # CI: no pauses that only make timings fair

    def sqlite_url(self, name: str) -> str:
        path = self.root / name / "threadline.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def p99(values: Sequence[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    index = min(len(present) - 1, max(0, round(0.99 * len(present) + 0.5) - 1))
    return present[index]


async def _warm_up(world: World, tag: str, quick: bool = False) -> None:
    """One conversation of the measured size (a short one in CI): imports, connections, caches and
    the statements a reply runs only once it streams long enough are paid here, once per process."""
    sent = await world.mention(tag, 0)
    await world.settle([sent], 30)
    if quick:
        return
    if world.platform == "slack":
        await asyncio.sleep(SLACK_SPACING)  # give back the workspace budget it used
    else:  # its thread took one of channel 0's 5 per 5 s: give it back before the row starts
        await asyncio.sleep(DISCORD_BUCKET_WINDOW)


# --------------------------------------------------------------------------- overhead


async def overhead(bench: Bench, platform: Platform, run: int, samples: int) -> dict[str, Any]:
    """Replies one after the other in a quiet workspace: placeholder and first-words latency.

    Slack: every other mention follows up in the previous thread. Discord: every other one is `/chat`.
    """
    name = f"overhead-{platform}-{run}"
    world = await World.open(platform, bench.model, bench.root / name, bench.sqlite_url(name))
    try:
        await _warm_up(world, f"s-w-{name}")
        reads_before = world.fake.history_reads()
        rejected_before = world.fake.count_429()
        cpu_before = world.cpu()
        sents: list[Sent] = []
        kinds: list[str] = []
        for index in range(samples):
            tag = f"s-{name}-{index}"
            started = time.monotonic()
            second = index % 2 == 1
            if platform == "slack" and second:
                sent = await world.mention(tag, (index - 1) % 10, thread=sents[-1].extra["thread"])
                kinds.append("slack follow-up")
            elif platform == "slack":
                sent = await world.mention(tag, index % 10)
                kinds.append("slack mention")
            else:
                sent = await world.mention(tag, index % 10, slash=second)
                kinds.append("discord /chat" if second else "discord mention")
            sents.append(sent)
            await world.settle([sent], 20)
            spacing = SLACK_SPACING if platform == "slack" else DISCORD_SPACING
            await asyncio.sleep(max(0.0, started + spacing - time.monotonic()))
        cpu = world.cpu().since(cpu_before)
        replies = await world.replies(sents)
        return {
            "platform": platform,
            "run": run,
            "kinds": kinds,
            "replies": [_reply_row(r) for r in replies],
            "exact": sum(r.exact for r in replies),
            "count": len(replies),
            "platform_429": world.fake.count_429() - rejected_before,
            "history_reads": world.fake.history_reads() - reads_before,
            "cpu_ms_per_short_reply": round(cpu / len(replies) * 1000, 2),
            "bot_errors": world.bot.errors()[:5],
        }
    finally:
        await world.close()


def _reply_row(reply: Reply) -> dict[str, Any]:
    return {
        "tag": reply.tag,
        "exact": reply.exact,
        "placeholder_ms": ms(reply.placeholder),
        "request_ms": ms(reply.request),
        "first_words_ms": ms(reply.first_words),
        "complete_ms": ms(reply.complete),
        "writes": reply.writes,
    }


# --------------------------------------------------------------------------- concurrency


async def concurrency(bench: Bench, platform: Platform, level: int, run: int = 0) -> dict[str, Any]:
    """`level` conversations started at once over 10 channels; every figure from one fresh bot."""
    name = f"concurrency-{platform}-{level}-{run}"
    world = await World.open(platform, bench.model, bench.root / name, bench.sqlite_url(name))
    try:
        await _warm_up(world, f"{'s' if bench.quick else 'c'}-w-{name}", bench.quick)
        records_before = await bench.model.count()
        lifetime_peak_before = world.bot.peak_kib()
        reset_peak(world.bot.pid)
        metrics_before = await world.bot.metrics()
        turns_before = await world.bot.turns_done()
        rejected_before = world.fake.count_429()
        reads_before = world.fake.history_reads()
        cpu_before = world.cpu()
        model_cpu_before = bench.model.cpu_seconds()
        own_before = cpu_seconds(os.getpid())
        busy_before = machine_busy_seconds()
        started = time.monotonic()
        sents = list(await asyncio.gather(*(world.mention(f"c-{name}-{i}", i % 10) for i in range(level))))
        sent_in = time.monotonic() - started
        await world.settle(sents, SETTLE_LIMIT, turns_before)
        elapsed = time.monotonic() - started
        cpu_after = world.cpu()
        cpu = cpu_after.since(cpu_before)
        model_cpu = bench.model.cpu_seconds() - model_cpu_before
        own_cpu = cpu_seconds(os.getpid()) - own_before
        # CPU that neither the bot nor the fakes used: another program competing for the 2 cores.
        other_cpu = machine_busy_seconds() - busy_before - cpu - model_cpu - own_cpu
        peak_run = world.bot.peak_kib()
        metrics_after = await world.bot.metrics()
        records = await bench.model.records(records_before)
        replies = await world.replies(sents, records)
        exact = [r for r in replies if r.exact]
        late = max((r["late_max"] for r in records), default=0.0)
        rejected = world.fake.count_429() - rejected_before
        result = {
            "platform": platform,
            "level": level,
            "run": run,
            "exact": len(exact),
            "count": len(replies),
            "platform_429": rejected,
            "platform_429_by_rule": dict(world.fake.limiter.rejected),
            "history_reads": world.fake.history_reads() - reads_before,
            "cpu_ms_per_reply": round(cpu / level * 1000, 1),
            "wakeups_per_reply": round(cpu_after.wakeups_since(cpu_before) / level, 1),
            "peak_mib": round(max(peak_run, lifetime_peak_before) / 1024, 1),
            "peak_mib_during_run": round(peak_run / 1024, 1),
            "event_loop_lag": lag_summary(metrics_before, metrics_after),
            "slowest_complete_s": (
                round(max(r.complete for r in exact if r.complete is not None), 2)
                if len(exact) == len(replies) and exact
                else None
            ),
            "slowest_exact_complete_s": round(max((r.complete or 0.0 for r in exact), default=0.0), 2),
            "placeholder_ms": {
                "p50": ms(median([r.placeholder for r in replies])),
                "p99": ms(p99([r.placeholder for r in replies])),
            },
            "first_words_ms": {
                "p50": ms(median([r.first_words for r in replies])),
                "p99": ms(p99([r.first_words for r in replies])),
            },
            "events_sent_in_s": round(sent_in, 3),
            "elapsed_s": round(elapsed, 1),
            "model_schedule_late_max_ms": round(late * 1000, 1),
            "model_cpu_s": round(model_cpu, 2),
            "fakes_cpu_s": round(own_cpu, 2),
            "other_programs_cpu_s": round(max(other_cpu, 0.0), 2),
            "bot_errors": world.bot.errors()[:5],
        }
        return result
    finally:
        await world.close(grace=3.0)  # replies still in flight are not waited for


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from several runs of the same level: the median of each figure, the worst of the
    correctness counts (exact texts, 429s, platform reads), and every run's CPU for reference."""
    if len(runs) == 1:
        return runs[0]
    by_cpu = sorted(runs, key=lambda r: r["cpu_ms_per_reply"])
    row = dict(by_cpu[len(by_cpu) // 2])  # the median run: its loop-lag summary and counts
    row["runs"] = len(runs)
    row["cpu_ms_per_reply_runs"] = [r["cpu_ms_per_reply"] for r in runs]
    row["exact"] = min(r["exact"] for r in runs)
    row["platform_429"] = max(r["platform_429"] for r in runs)
    row["history_reads"] = max(r["history_reads"] for r in runs)
    row["bot_errors"] = [e for r in runs for e in r["bot_errors"]][:5]
    for figure in ("cpu_ms_per_reply", "wakeups_per_reply", "peak_mib", "peak_mib_during_run", "elapsed_s"):
        row[figure] = median([r[figure] for r in runs])
    slowest = [r["slowest_complete_s"] for r in runs]
    row["slowest_complete_s"] = None if None in slowest else median(slowest)
    for figure in ("placeholder_ms", "first_words_ms"):
        row[figure] = {q: median([r[figure][q] for r in runs]) for q in ("p50", "p99")}
    return row


# --------------------------------------------------------------------------- history growth


async def history(
    bench: Bench,
    database: str,
    sizes: Sequence[int],
    rounds: int,
    limits: Sequence[int | None] = (None, 40),
    background: int = 2000,
) -> dict[str, Any]:
    """The turn after N stored turns (Discord threads; a Slack thread works the same in the core).

    Conversations of every size are pre-filled with SQL; then `rounds` rounds send one mention to
    each, in shuffled order, each once the one before is answered (and 0.3 s later); the figure is
    the time from the event to the model request, and the platform reads of earlier messages (which
    must be none).
    """
    name = f"history-{database}"
    workdir = bench.root / name
    fake = BenchDiscord(channels=2)
    threads: dict[tuple[int | None, int], Any] = {}
    stored = []
    for limit in limits:
        for size in sizes:
            parent = fake.text_channels[0 if limit is None else 1]
            thread = fake.add_thread(parent, f"{size} turns, limit {limit}")
            threads[(limit, size)] = thread
            key = ConversationKey("discord", str(fake.guild.id), str(parent.id), str(thread.id))
            stored.append(Stored(key, size, limit))
    # Other teams' conversations, so the database's statistics look like a real one's.
    guild = str(fake.guild.id + 1)
    stored += [Stored(ConversationKey("discord", guild, str(i // 50), str(i)), 5) for i in range(background)]
    filled = time.monotonic()
    if database == "sqlite":
        url = bench.sqlite_url(name)
        prefill_sqlite(Path(url.removeprefix("sqlite:///")), stored, workdir)
    else:
        assert bench.postgres is not None
        url = await recreate_postgres(bench.postgres)
        await prefill_postgres(url, stored, workdir)
    prefill_s = time.monotonic() - filled
    world = await World.open("discord", bench.model, workdir, url, fake=fake)
    try:
        await _warm_up(world, f"{'s' if bench.quick else 'c'}-w-{name}", bench.quick)
        reads_before = fake.history_reads()
        by_case: dict[tuple[int | None, int], list[Sent]] = {case: [] for case in threads}
        order = list(threads)
        rng = random.Random(7)
        for round_index in range(rounds):
            rng.shuffle(order)
            for case in order:
                limit, size = case
                tag = f"s-{name}-{limit or 'w'}-{size}-{round_index}"
                sent = await world.mention(tag, 0, in_thread=threads[case])
                by_case[case].append(sent)
                # One turn at a time: a turn measured while another streams would time both.
                await world.settle([sent], 30)
                await asyncio.sleep(0.3)
        records = await bench.model.records()
        cases: list[dict[str, Any]] = []
        for (limit, size), sents in by_case.items():
            replies = await world.replies(sents, records)
            cases.append(
                {
                    "history_limit": limit,
                    "stored_turns": size,
                    "exact": sum(r.exact for r in replies),
                    "count": len(replies),
                    "event_to_request_ms": ms(median([r.request for r in replies])),
                    "samples_ms": [ms(r.request) for r in replies],
                    "request_messages": median([float(r.request_messages) for r in replies]),
                    "request_kib": round((median([float(r.request_bytes) for r in replies]) or 0) / 1024, 1),
                }
            )
        for row in cases:
            base = next(
                c
                for c in cases
                if c["history_limit"] == row["history_limit"] and c["stored_turns"] == min(sizes)
            )
            if row["event_to_request_ms"] and base["event_to_request_ms"]:
                row["ratio_to_smallest"] = round(row["event_to_request_ms"] / base["event_to_request_ms"], 2)
        return {
            "database": database,
            "rounds": rounds,
            "prefill_s": round(prefill_s, 1),
            "cases": cases,
            "history_reads": fake.history_reads() - reads_before,
            "platform_429": fake.count_429(),
            "bot_errors": world.bot.errors()[:5],
        }
    finally:
        await world.close()
        if database != "sqlite" and bench.postgres is not None:
            await recreate_postgres(bench.postgres, create=False)  # ~0.2 GB: not left behind


# --------------------------------------------------------------------------- start-up


async def startup(bench: Bench, runs: int) -> dict[str, Any]:
    """`threadline run` → GET /readyz 200, and VmRSS one second after; per configured platform set.

    The first start migrates a fresh SQLite database; the next `runs` restart on it.
    """
    results = {}
    for config in ("slack", "discord", "slack+discord"):
        slack = BenchSlack() if "slack" in config else None
        discord = BenchDiscord() if "discord" in config else None
        env = dict(bench.model.env())
        if slack is not None:
            await slack.start()
            env.update(
                SLACK_BOT_TOKEN=slack.bot_token,
                SLACK_SIGNING_SECRET=slack.signing_secret,
                SLACK_API_URL=slack.api_url,
            )
        if discord is not None:
            await discord.start()
            env.update(
                DISCORD_TOKEN=discord.token,
                DISCORD_API_URL=discord.api_url,
                DISCORD_GATEWAY_URL=discord.gateway_url,
            )
        env["DATABASE_URL"] = bench.sqlite_url(f"startup-{config}")
        times: list[float] = []
        idle: list[float] = []
        first = None
        try:
            for attempt in range(runs + 1):
                bot = Bot.spawn(env, bench.root / f"startup-{config}")
                try:
                    ready = await bot.wait_ready()
                    await asyncio.sleep(1.0)
                    rss = bot.rss_kib() / 1024
                finally:
                    await bot.stop()
                if attempt == 0:
                    first = ready
                else:
                    times.append(ready)
                    idle.append(rss)
        finally:
            if slack is not None:
                await slack.close()
            if discord is not None:
                await discord.close()
        results[config] = {
            "ready_s": round(median(times) or 0.0, 2),
            "ready_s_runs": [round(t, 2) for t in times],
            "first_start_with_migration_s": round(first or 0.0, 2),
            "idle_rss_mib": round(median(idle) or 0.0, 1),
            "idle_rss_mib_runs": [round(m, 1) for m in idle],
        }
    return results
