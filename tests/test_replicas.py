"""Two real `threadline run` replicas on one PostgreSQL database behind a (simulated) load balancer.

What operators rely on when they scale out (DESIGN.md "Scale"):
- an event delivered to both replicas (a load balancer's retry) is answered once;
- two messages of one thread reaching different replicas at once are answered one after the other,
  the second reply seeing the first (the conversation lease);
- /metrics of each replica counts its turns and tokens;
- SIGTERM stops each replica cleanly (exit 0) within the shutdown grace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import _create_pg_database, _drop_pg_database, _pg_base_url
from tests.fakes.openai_server import FakeOpenAI, StreamReply, clear_proxy_env
from tests.fakes.slack_server import FakeSlack
from tests.slack_process import SlackService

BOT = "<@UBOT>"
GRACE = 5.0
SETTLE = 20.0
SLOW = " ".join(f"word{i}" for i in range(20))  # streamed over about a second


@pytest_asyncio.fixture
async def pg_url() -> AsyncIterator[str]:
    base = _pg_base_url()
    if base is None:
        pytest.skip("TEST_DATABASE_URL not set")
    url, admin = await _create_pg_database(base)
    try:
        yield url
    finally:
        await _drop_pg_database(url, admin)


async def _events(replicas: list[SlackService], outcome: str) -> float:
    counts = await asyncio.gather(
        *(replica.metric("threadline_slack_events_total", outcome=outcome) for replica in replicas)
    )
    return sum(counts)


async def _wait_for_outcomes(replicas: list[SlackService], **expected: int) -> None:
    """Until the replicas together settled events with these outcomes (counted in /metrics)."""
    async with asyncio.timeout(SETTLE):
        while True:
            seen = {outcome: await _events(replicas, outcome) for outcome in expected}
            if all(seen[outcome] >= count for outcome, count in expected.items()):
                assert seen == expected, f"more events settled than expected: {seen}"
                return
            await asyncio.sleep(0.05)


async def test_two_replicas_answer_each_message_once_and_serialise_a_thread(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_env(monkeypatch)
    async with FakeOpenAI() as llm, FakeSlack() as slack:
        replicas = [
            SlackService(
                tmp_path / name,
                database_url=pg_url,
                slack=slack,
                llm=llm,
                THREADLINE_SHUTDOWN_GRACE=str(GRACE),
            )
            for name in ("a", "b")
        ]
        a, b = replicas
        try:
            for replica in replicas:
                await replica.start()
            await asyncio.gather(*(replica.wait_ready() for replica in replicas))
            slack.events_url = a.events_url  # Slack's echoes of the bot's own posts and edits

            # (a) The same signed event reaches both replicas (a load balancer retried it): one reply.
            message = slack.message_event(f"{BOT} hello")
            mention = slack.mention_event(message)
            event_id = slack.new_event_id()
            deliveries = await asyncio.gather(
                slack.deliver_event(mention, event_id=event_id, url=a.events_url),
                slack.deliver_event(mention, event_id=event_id, url=b.events_url),
            )
            assert [delivery.status for delivery in deliveries] == [200, 200]
            await _wait_for_outcomes(replicas, answered=1, duplicate=1)
            thread = str(message["ts"])
            assert [m.text for m in slack.thread("C0001", thread) if m.user == "UBOT"] == [
                "Echo: Alice Liddell: hello"
            ]
            assert len(llm.requests) == 1

            # (b) Two messages of that thread, one to each replica at once: answered one after the other.
            llm.enqueue(StreamReply.words(SLOW, chunk_delay=0.05))
            first = slack.message_event("first follow-up", thread_ts=thread)
            second = slack.message_event("second follow-up", thread_ts=thread)
            await asyncio.gather(
                slack.deliver_event(first, url=a.events_url),
                slack.deliver_event(second, url=b.events_url),
            )
            await _wait_for_outcomes(replicas, answered=3, duplicate=1)
            earlier, later = llm.requests[1:3]
            asked_first = earlier["messages"][-1]["content"]
            asked_second = later["messages"][-1]["content"]
            assert {asked_first, asked_second} == {
                "Alice Liddell: first follow-up",
                "Alice Liddell: second follow-up",
            }
            # The later request was built after the earlier reply was stored: the lease held it back.
            assert {"role": "assistant", "content": SLOW} in later["messages"]
            assert {"role": "user", "content": asked_second} not in earlier["messages"]
            replies = [m.text for m in slack.thread("C0001", thread) if m.user == "UBOT"]
            assert sorted(replies) == sorted(["Echo: Alice Liddell: hello", SLOW, f"Echo: {asked_second}"])
            assert len(llm.requests) == 3

            # (c) Each replica answered a follow-up: its /metrics count turns and tokens.
            for replica in replicas:
                turns = await replica.metric("threadline_turns_total", platform="slack", outcome="complete")
                assert turns >= 1
                assert await replica.metric("threadline_tokens_total", direction="in") > 0
                assert await replica.metric("threadline_tokens_total", direction="out") > 0

            # (d) SIGTERM: each replica stops cleanly within the grace period.
            statuses = await asyncio.gather(*(replica.terminate(GRACE + 10) for replica in replicas))
            assert statuses == [0, 0], a.log() + b.log()
        finally:
            for replica in replicas:
                await replica.kill()
