"""Slack's limits are kept before Slack has to refuse: mentions at once against the bench's fake Slack,
which enforces chat.postMessage per channel and per workspace, and chat.update per workspace
(bench/limits.py). The rates are scaled up here (Slack's are per second and per minute) so that a
crowd of replies takes seconds; the bot's own budgets are scaled the same way."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

import bench.limits
import bots.slack.surface
from bench.platforms import BenchSlack
from bots.slack.surface import STREAMS_PER_WORKSPACE
from tests.fakes.openai_server import FakeOpenAI, StreamReply
from tests.slack_harness import Said, SlackHarness


def answer(tag: str) -> str:
    return f"Answer {tag}: " + " ".join(f"word{n}" for n in range(30))


def model_reply(body: dict[str, Any]) -> StreamReply:
    found = re.search(r"\bq\d+\b", str(body["messages"][-1]["content"]))
    return StreamReply.words(answer(found.group(0) if found else "?"), chunk_delay=0.01)


@pytest.fixture
def scaled_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack: 10 posts/s per channel (burst 5), 12/s per workspace (burst 10), 10 updates/s (burst 10).
    The bot: one post less in each burst, at the same rates (as in bots/slack/surface.py)."""
    rules = {
        "chat.postMessage": [
            ("chat.postMessage/channel", "channel", 10.0, 5),
            ("chat.postMessage/workspace", "team", 12.0, 10),
        ],
        "chat.update": [("chat.update/workspace", "team", 10.0, 10)],
    }
    for method, limits in rules.items():
        monkeypatch.setitem(bench.limits.SLACK_RULES, method, limits)
    monkeypatch.setattr(bots.slack.surface, "POST_RATE_PER_CHANNEL", 10.0)
    monkeypatch.setattr(bots.slack.surface, "POST_RATE_PER_MINUTE", 12 * 60)
    monkeypatch.setattr(bots.slack.surface, "POST_BURST_PER_WORKSPACE", 8)
    monkeypatch.setattr(bots.slack.surface, "UPDATE_RATE_PER_MINUTE", 10 * 60)


async def test_a_crowd_of_mentions_gets_every_answer_without_a_429(
    tmp_path: Path, llm: FakeOpenAI, scaled_limits: None
) -> None:
    """20 mentions in each of two channels at once: 40 placeholders against 5 per channel and 10 per
    workspace at once, then every reply's edits against one workspace budget."""
    llm.default = model_reply
    fake = BenchSlack(channels=2)
    async with SlackHarness.running(tmp_path, llm=llm, fake=fake) as slack:
        mentions = [(f"q{n}", fake.channel_ids[n % 2]) for n in range(40)]
        said: list[Said] = list(
            await asyncio.gather(
                *(slack.say(f"<@{fake.bot_user_id}> {tag}", channel=c, settle=False) for tag, c in mentions)
            )
        )

        def exact() -> bool:
            return all(
                slack.texts(s.channel, s.ts) == [answer(tag)]
                for s, (tag, _) in zip(said, mentions, strict=True)
            )

        async with asyncio.timeout(30):
            while not exact():
                await asyncio.sleep(0.05)
        assert fake.limiter.rejected == {}
        assert len(fake.calls_to("chat.postMessage")) == 40  # one message per reply, no retries
        assert len(fake.calls_to("users.info")) == 1  # 40 mentions by one new person: one lookup
        # Three replies streamed (placeholder, then edits); the rest arrived whole, in one post each.
        replies = [slack.bot_messages(s.channel, s.ts) for s in said]
        assert all(len(reply) == 1 for reply in replies)
        streamed = [reply for [reply] in replies if reply.versions[0] == "_Thinking…_"]
        assert len(streamed) == STREAMS_PER_WORKSPACE
        assert all(len(reply.versions) == 1 for [reply] in replies if reply not in streamed)
