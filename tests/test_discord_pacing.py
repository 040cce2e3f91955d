"""Every Discord request of the process stays under the global 50/s (interactions and webhooks exempt)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import discord

from bots.discord.client import GLOBAL_REQUESTS, pace_global_requests
from core.streaming import EditBudgets


class RecordingHTTP:
    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []

    async def request(self, route: discord.http.Route, **_: Any) -> None:
        self.sent.append((route.path, time.monotonic()))


async def test_requests_beyond_the_burst_are_paced_and_interactions_are_not() -> None:
    http = RecordingHTTP()
    pace_global_requests(http, EditBudgets())  # type: ignore[arg-type]
    began = time.monotonic()
    messages = [
        http.request(
            discord.http.Route(
                "PATCH", "/channels/{channel_id}/messages/{message_id}", channel_id=1, message_id=i
            )
        )
        for i in range(60)
    ]
    callbacks = [
        http.request(
            discord.http.Route(
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                interaction_id=i,
                interaction_token="t",
            )
        )
        for i in range(10)
    ]
    await asyncio.gather(*messages, *callbacks)
    edits = sorted(at - began for path, at in http.sent if path.startswith("/channels/"))
    interactions = [at - began for path, at in http.sent if path.startswith("/interactions/")]
    assert len(edits) == 60 and max(interactions) < 0.05
    assert edits[GLOBAL_REQUESTS.burst - 1] < 0.05  # the burst goes at once
    # then the rate: the 60th request waits for 50 more tokens
    assert edits[-1] >= (60 - GLOBAL_REQUESTS.burst) / GLOBAL_REQUESTS.rate - 0.02
    # and no one-second window holds more than Discord's 50
    assert max(sum(1 for t in edits if start <= t < start + 1) for start in edits) <= 50
