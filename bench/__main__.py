"""`make bench` / `python -m bench [--quick]`: what Threadline costs per reply, and how that grows.

Runs `threadline run` as users run it (a separate process), against the test fakes of Slack,
Discord and the OpenAI API on 127.0.0.1 (the fake model in its own process), prints Markdown tables
and writes them as JSON (bench/results/latest.json by default).

--quick (CI): Slack and Discord with 1 and 10 conversations, one turn after 20 stored turns on
SQLite; exits 1 only when a final text is not exact or a platform 429 was received, never on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from bench import report
from bench.procs import ModelProc, git_state, machine
from bench.reference import measure_fresh
from bench.scenarios import Bench, concurrency, history, median_row, overhead, startup
from bench.world import Platform

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
SECTIONS = ("startup", "overhead", "concurrency", "history")
REPEATED_LEVELS = 50  # concurrency rows up to this many at once run --runs times (medians reported)
SINGLE_REPLY_RUNS = 7


def runs_of(level: int, runs: int) -> int:
    """Runs of a concurrency row. A single reply's CPU varies by ±30% between runs on a 2-core VM
    (13.7 to 22.9 ms at one commit): that row runs at least SINGLE_REPLY_RUNS times."""
    if level == 1:
        return max(runs, SINGLE_REPLY_RUNS)
    return runs if level <= REPEATED_LEVELS else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI mode: seconds; fails only on inexact text or 429s"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="runs of the overhead and start-up sections and of concurrency rows up to 50 (default 3)",
    )
    parser.add_argument(
        "--samples", type=int, default=4, help="replies per overhead run and platform (default 4)"
    )
    parser.add_argument("--levels", default="1,10,50,500", help="conversations at once (default 1,10,50,500)")
    parser.add_argument("--platforms", default="slack,discord")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections to run (default {','.join(SECTIONS)})"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TEST_DATABASE_URL", DEFAULT_POSTGRES),
        help="PostgreSQL for the history section ( skips it); database `threadline_bench` is recreated",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON results (default bench/results/latest.json)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, databases)")
    return parser.parse_args(argv)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def postgres_available(url: str) -> bool:
    if not url:
        return False
    try:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncio.wait_for(asyncpg.connect(url), 5)
        await conn.close()
        return True
    except Exception as exc:  # no server: the section is skipped and says so
        say(f"PostgreSQL at {url} unavailable ({type(exc).__name__}); its history rows are skipped")
        return False


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="threadline-bench-"))
    platforms = [cast(Platform, p) for p in args.platforms.split(",") if p in ("slack", "discord")]
    sections = set(args.only.split(","))
    results: dict[str, Any] = {
        "command": "make bench" if not args.quick else "python -m bench --quick",
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_state(),
        "setup": {
            "model": "fake OpenAI (tests/fakes/openai_server.py) in its own process: one word per chunk "
            "every 20 ms, first chunk 20 ms after the request; answers ~865 characters in 147 content chunks",
            "platforms": "tests/fakes/slack_server.py (HTTP Events API, signed) and "
            "tests/fakes/discord_server.py (gateway + REST) in the bench process, with the rate limits of "
            "bench/limits.py",
            "bot": "`threadline run` (separate process, default settings, SQLite file unless stated)",
        },
        "problems": [],
    }
    if not args.quick:
        say("reference workload …")
        results["machine"]["reference_cpu_ms"] = {"start": await asyncio.to_thread(measure_fresh)}
    model = await ModelProc.start()
    bench = Bench(model, root, None, say, quick=args.quick)
    try:
        if args.quick:
            await quick(bench, results, platforms)
        else:
            if "startup" in sections:
                say("start-up …")
                results["startup"] = await startup(bench, max(1, args.runs - 1))
            if "overhead" in sections:
                results["overhead_runs"] = args.runs
                runs = []
                for platform in platforms:
                    for index in range(args.runs):
                        say(f"overhead: {platform}, run {index + 1} of {args.runs} …")
                        runs.append(await overhead(bench, platform, index, args.samples))
                results["overhead"] = runs
                results["overhead_summary"] = report.summarize_overhead(runs)
            if "concurrency" in sections:
                rows = []
                for platform in platforms:
                    for level in (int(x) for x in args.levels.split(",")):
                        runs = runs_of(level, args.runs)
                        say(f"concurrency: {platform}, {level} at once ({runs} run(s)) …")
                        rows.append(
                            median_row([await concurrency(bench, platform, level, i) for i in range(runs)])
                        )
                results["concurrency"] = rows
            if "history" in sections:
                bench.postgres = args.postgres if await postgres_available(args.postgres) else None
                out = []
                for database in ("sqlite", "postgresql"):
                    if database == "postgresql" and bench.postgres is None:
                        continue
                    say(f"history: {database} …")
                    out.append(await history(bench, database, (20, 200, 100_000), rounds=5))
                results["history"] = out
            results["targets"] = report.targets(results)
            results["machine"]["reference_cpu_ms"]["end"] = await asyncio.to_thread(measure_fresh)
        collect_problems(results)
    finally:
        await model.stop()
        if args.keep:
            say(f"working directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results["duration_s"] = round(time.monotonic() - started, 1)
    return results


async def quick(bench: Bench, results: dict[str, Any], platforms: list[Platform]) -> None:
    """Both platforms side by side (timings are not judged here): 1 then 10 at once; on Discord also
    the turn after 20 stored turns on SQLite."""

    async def one(platform: Platform) -> list[dict[str, Any]]:
        return [await concurrency(bench, platform, level) for level in (1, 10)]

    jobs = [one(p) for p in platforms]
    history_job = history(bench, "sqlite", (20,), rounds=1, limits=(None,))
    done = await asyncio.gather(*jobs, history_job)
    *per_platform, history_result = done
    results["concurrency"] = [row for rows in per_platform for row in cast(list[dict[str, Any]], rows)]
    results["history"] = [history_result]


def collect_problems(results: dict[str, Any]) -> None:
    problems: list[str] = results["problems"]
    for row in results.get("concurrency") or []:
        where = f"{row['platform']}, {row['level']} at once"
        if row["exact"] != row["count"]:
            problems.append(f"{where}: {row['count'] - row['exact']} of {row['count']} final texts not exact")
        if row["platform_429"]:
            problems.append(f"{where}: {row['platform_429']} platform 429s ({row['platform_429_by_rule']})")
    for run in results.get("overhead") or []:
        where = f"overhead {run['platform']} run {run['run'] + 1}"
        if run["exact"] != run["count"]:
            problems.append(f"{where}: {run['count'] - run['exact']} of {run['count']} final texts not exact")
        if run["platform_429"]:
            problems.append(f"{where}: {run['platform_429']} platform 429s")
    for section in results.get("history") or []:
        for case in section["cases"]:
            if case["exact"] != case["count"]:
                problems.append(f"history {section['database']} {case['stored_turns']} turns: text not exact")
        if section["platform_429"]:
            problems.append(f"history {section['database']}: {section['platform_429']} platform 429s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    print(report.render(results))
    output = args.output or (None if args.quick else RESULTS / "latest.json")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        say(f"results written to {output}")
    if args.quick and results["problems"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
