"""Benchmark of the database work of one reply, alone: the process CPU it costs.

A reply's statements, in the engine's order, through the same services: the persona, the
conversation opened with its lease, the user's message and the newest history, the assistant's
row, one checkpoint, and the final update with the lease's release. Replies go one after another with a
millisecond's idle gap (so that every hop to aiosqlite's thread wakes it, as in a real reply), on a
fresh SQLite file or on PostgreSQL. No platform, no model: what is left is the storage layer's cost.

    .venv/bin/python -m bench.bench_database [--replies 300] [--runs 5] [--database-url URL]

Old against new: run it with PYTHONPATH pointing at a `git worktree` of the old commit.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from pathlib import Path

from core.app import Core
from core.config import load_settings
from core.leases import ConversationLeases
from core.types import ConversationKey


async def _reply(core: Core, leases: ConversationLeases, number: int) -> None:
    key = ConversationKey("slack", "T1", f"C{number % 10}", f"{number}.000100")
    await core.personas.resolve(key)
    owner = leases.new_owner()
    message = {
        "role": "user",
        "content": "Alice: hello",
        "token_count": 8,
        "status": "complete",
        "author_id": "U1",
        "author_name": "Alice",
        "source_message_id": f"m{number}",
        "requested_by": "U1",
        "token_encoding": "o200k_base",
    }
    opened = await core.conversations.open(
        key, functools.partial(leases.take, owner=owner), message, with_history=True
    )
    async with leases.hold(opened.conversation_id, owner=owner, taken=opened.lease_taken) as lease:
        reply_id = await core.conversations.add_message(
            opened.conversation_id,
            role="assistant",
            content="",
            token_count=0,
            status="streaming",
            model="gpt-4o-mini",
            persona_name="assistant",
            author_name="assistant",
            platform_message_ids=["1"],
            requested_by="U1",
            token_encoding="utf8-bound",
        )
        async for _batch in core.conversations.history(
            opened.conversation_id, opened.history_start, opened.message_id or 0, opened.history
        ):
            pass
        await core.conversations.update_message(reply_id, content="word " * 80, platform_message_ids=["1"])
        final = {"content": "word " * 174, "status": "complete", "platform_message_ids": ["1"]}
        await core.conversations.update_message(reply_id, also=lease.release(), **final)
        lease.released = True


async def measure(database_url: str, replies: int, runs: int) -> list[float]:
    """Process CPU (µs) per reply's database work, one figure per run."""
    settings = load_settings(_env_file=None, database_url=database_url, openai_api_key="sk-bench")
    core = await Core.open(settings)
    leases = ConversationLeases(core.db, lease_seconds=core.settings.lease_seconds)
    try:
        for number in range(100):  # warm-up: connections, compiled statements
            await _reply(core, leases, number)
        per_reply = []
        for run in range(runs):
            started = time.process_time()
            for number in range(replies):
                await _reply(core, leases, 1000 + run * replies + number)
                await asyncio.sleep(0.001)
            per_reply.append((time.process_time() - started) / replies * 1e6)
        return per_reply
    finally:
        await core.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_database", description=__doc__)
    parser.add_argument("--replies", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    from bots.cli import new_event_loop

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runs = runner.run(measure(url, args.replies, args.runs))
    figures = ", ".join(f"{x:.0f}" for x in runs)
    print(
        f"database work of one reply: {statistics.median(runs):.0f} µs of process CPU "
        f"(median of {len(runs)} runs of {args.replies} replies: {figures})"
    )


if __name__ == "__main__":
    main()
