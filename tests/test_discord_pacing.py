"""Discord's limits are kept before Discord has to refuse: mentions at once against the bench's fake,
which enforces Discord's documented limits (bench/limits.py): 5 per 5 s per channel and route, and
50 requests per second per bot."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from aiohttp import web

import bench.limits
import bots.discord.surface
from bench.platforms import BenchDiscord, Sent
from bots.discord.adapter import DiscordAdapter
from bots.discord.client import pacing_trace, request_budgets
from bots.discord.surface import GLOBAL_REQUESTS, channel_budget
from core.app import Core
from core.streaming import EditBudgets
from core.surface import EditBudget
from tests.discord_harness import isolate_discord_endpoints, settings_for
from tests.fakes.openai_server import FakeOpenAI, StreamReply, clear_proxy_env

WORDS = 40  # per answer, one chunk each


def answer(tag: str) -> str:
    return f"Answer {tag}: " + " ".join(f"word{n}" for n in range(WORDS))


def model_reply(chunk_delay: float) -> Callable[[dict[str, Any]], StreamReply]:
    def reply(body: dict[str, Any]) -> StreamReply:
        found = re.search(r"\bq\d+\b", str(body["messages"][-1]["content"]))
        return StreamReply.words(answer(found.group(0) if found else "?"), chunk_delay=chunk_delay)

    return reply


@dataclass
class LimitedDiscord:
    fake: BenchDiscord
    llm: FakeOpenAI
    core: Core

    async def mentions(self, per_channel: int, channels: int) -> list[Sent]:
        """`per_channel` people mention the bot in each of `channels` channels, all at once."""
        targets = [self.fake.text_channels[c] for c in range(channels) for _ in range(per_channel)]
        return list(
            await asyncio.gather(
                *(self.fake.mention(f"q{n}", f"question q{n}", channel=t) for n, t in enumerate(targets))
            )
        )

    async def replies_exact(self, sents: list[Sent], within: float) -> float:
        """Wait until every reply shows its exact answer; the seconds that took."""
        began = time.monotonic()
        async with asyncio.timeout(within):
            while not all(self.fake.final_text(s) == answer(s.tag) for s in sents):
                await asyncio.sleep(0.05)
        return time.monotonic() - began


@asynccontextmanager
async def limited_discord(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, channels: int, chunk_delay: float = 0.005
) -> AsyncIterator[LimitedDiscord]:
    isolate_discord_endpoints(monkeypatch)
    fake = BenchDiscord(channels=channels)
    await fake.start()
    llm = FakeOpenAI(default=model_reply(chunk_delay))
    await llm.start()
    core = await Core.open(settings_for(tmp_path, fake, llm, discord_edit_interval=0.2))
    adapter = DiscordAdapter(core, None, ready_timeout=5.0, client_options={"guild_ready_timeout": 0.05})
    try:
        await adapter.start()
        yield LimitedDiscord(fake, llm, core)
    finally:
        await adapter.stop()
        await core.aclose()
        await llm.stop()
        await fake.close()


def test_each_request_pays_its_channel_bucket_then_the_global_budget() -> None:
    def paid(action: str) -> tuple[EditBudget, ...]:
        return (channel_budget(7, action), GLOBAL_REQUESTS)

    assert request_budgets("POST", "/channels/7/messages/99/threads") == paid("threads")
    assert request_budgets("POST", "/channels/7/messages") == paid("posts")
    assert request_budgets("PATCH", "/channels/7/messages/99") == paid("edits")
    assert request_budgets("GET", "/channels/7") == (GLOBAL_REQUESTS,)
    assert request_budgets("POST", "/interactions/1/token/callback") == ()
    assert request_budgets("PATCH", "/webhooks/1/token/messages/@original") == ()


async def test_every_api_request_leaves_within_the_global_budget_interactions_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pacing sits in aiohttp itself: whatever discord.py sends (retries included) is counted."""
    clear_proxy_env(monkeypatch)
    arrived: list[tuple[str, float]] = []

    async def record(request: web.Request) -> web.Response:
        arrived.append((request.path, time.monotonic()))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v10"
    monkeypatch.setattr(discord.http.Route, "BASE", base)
    try:
        async with aiohttp.ClientSession(trace_configs=[pacing_trace(EditBudgets())]) as session:

            async def send(method: str, path: str) -> None:
                async with session.request(method, base + path) as response:
                    await response.read()

            # Open the connections first: a request paced at its start leaves once it has one.
            await asyncio.gather(*(send("POST", f"/interactions/{n}/t/callback") for n in range(90)))
            arrived.clear()
            began = time.monotonic()
            await asyncio.gather(
                *(send("PATCH", f"/channels/{n}/messages/1") for n in range(80)),
                *(send("POST", f"/interactions/{n}/token/callback") for n in range(10)),
            )
    finally:
        await runner.cleanup()
    edits = sorted(at - began for path, at in arrived if path.startswith("/api/v10/channels/"))
    callbacks = [at - began for path, at in arrived if path.startswith("/api/v10/interactions/")]
    # Interaction callbacks are not paced: paced with the 80 edits, the last would leave near 2 s.
    assert len(edits) == 80 and max(callbacks) < 0.3
    # The burst at once (paced without it, the 5th edit would leave 4/42 s ≈ 0.095 s after the 1st),
    # then the rate. Both are measured between requests, so a stall of this VM before the first one
    # leaves counts for neither.
    assert edits[GLOBAL_REQUESTS.burst - 1] - edits[0] < 0.06
    assert edits[-1] >= (80 - GLOBAL_REQUESTS.burst) / GLOBAL_REQUESTS.rate - 0.02
    assert max(sum(1 for t in edits if start <= t < start + 1) for start in edits) <= 50


async def test_five_mentions_in_one_channel_are_all_answered_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fifth thread in a channel empties its bucket: discord.py would have kept that mention
    waiting ~5 s for the bucket's reset before answering it."""
    async with limited_discord(tmp_path, monkeypatch, channels=2) as world:
        sents = await world.mentions(per_channel=5, channels=2)
        took = await world.replies_exact(sents, within=15)
        assert world.fake.count_429() == 0
        assert took < 3.5, f"{took:.1f} s"


async def test_a_crowd_of_mentions_gets_every_answer_without_a_429(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 mentions in each of 6 channels at once: 72 threads over 5-per-window buckets, and more
    than 200 requests against 50 per second. Windows of 1 s here (5 s on Discord) keep it short."""
    monkeypatch.setattr(bench.limits, "DISCORD_ROUTE_PERIOD", 1.0)
    monkeypatch.setattr(bots.discord.surface, "ROUTE_WINDOW", 1.1)
    async with limited_discord(tmp_path, monkeypatch, channels=6, chunk_delay=0.01) as world:
        sents = await world.mentions(per_channel=12, channels=6)
        await world.replies_exact(sents, within=30)
        assert world.fake.limiter.rejected == {}
        threads = [r for r in world.fake.requests if r.path.endswith("/threads")]
        assert len(threads) == 72  # every mention got its thread, none answered inline
