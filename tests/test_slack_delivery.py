"""Slack's delivery guarantees vs. ours: retries, redeliveries across restarts, signatures, Socket Mode."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from core.storage.models import ProcessedEventRow
from tests.fakes.openai_server import FakeOpenAI, StreamReply
from tests.slack_harness import SlackHarness

BOT = "<@UBOT>"


@pytest_asyncio.fixture
async def socket_slack(tmp_path: Path, llm: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    async with SlackHarness.running(tmp_path, llm=llm, mode="socket") as harness:
        yield harness


async def test_three_deliveries_of_one_event_give_one_reply(slack: SlackHarness, llm: FakeOpenAI) -> None:
    # A slow model: Slack would retry while the first delivery is still being answered.
    llm.enqueue(StreamReply.words("slow answer", first_delay=0.2))
    fake = slack.fake
    event = fake.message_event("hello", channel="D0001", channel_type="im")
    event_id = fake.new_event_id()
    deliveries = await asyncio.gather(
        fake.deliver_event(event, event_id=event_id),
        fake.deliver_event(event, event_id=event_id, retry_num=1),
        fake.deliver_event(event, event_id=event_id, retry_num=2, retry_reason="http_error"),
    )
    assert [d.status for d in deliveries] == [200, 200, 200]
    assert slack.adapter is not None
    outcomes = await slack.adapter.wait_for_outcomes(event_id, 3)
    assert sorted(outcomes) == ["answered", "duplicate", "duplicate"]
    assert slack.texts("D0001", None) == ["slow answer"]
    assert len(llm.requests) == 1


async def test_events_are_acknowledged_before_the_model_answers(slack: SlackHarness, llm: FakeOpenAI) -> None:
    llm.enqueue(StreamReply.words("late", first_delay=0.5))
    said = await slack.say(f"{BOT} take your time", settle=False)
    assert [d.status for d in said.deliveries] == [200, 200]
    # Acknowledged while the model has not answered yet: at most the placeholder is visible.
    assert slack.texts("C0001", said.ts) in ([], ["_Thinking…_"])
    assert await slack.wait_for_final_text(said.ts) == "late"


async def test_a_redelivery_after_a_restart_is_not_answered(slack: SlackHarness, llm: FakeOpenAI) -> None:
    said = await slack.say(f"{BOT} once only")
    assert len(slack.texts("C0001", said.ts)) == 1
    await slack.restart()  # a new Core on the same SQLite file, a new adapter
    await slack.redeliver(said, retry_num=1, index=0)
    await slack.redeliver(said, retry_num=1, index=1)
    outcomes = await slack.settle(said)  # the new adapter saw each event once
    assert outcomes == ["duplicate", "duplicate"]
    assert len(slack.texts("C0001", said.ts)) == 1
    assert len(llm.requests) == 1
    assert slack.core is not None
    async with slack.core.db.session() as session:
        claimed = set(await session.scalars(select(ProcessedEventRow.event_id)))
    assert set(said.event_ids) <= claimed


@pytest.mark.parametrize("problem", ["missing", "wrong secret", "tampered", "stale"])
async def test_unsigned_or_badly_signed_requests_get_401_and_no_work(
    slack: SlackHarness, llm: FakeOpenAI, problem: str
) -> None:
    fake = slack.fake
    auth_calls = len(fake.calls_to("auth.test"))
    body = json.dumps(fake.event_callback(fake.message_event(f"{BOT} hi")))
    if problem == "missing":
        delivery = await fake.post_signed(body, "application/json", signed=False)
    elif problem == "wrong secret":
        delivery = await fake.post_signed(body, "application/json", secret="not-the-secret")
    elif problem == "tampered":
        from tests.fakes.slack_server import sign

        ts = int(time.time())
        headers = {
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": sign(fake.signing_secret, ts, body),
        }
        delivery = await fake.post_signed(
            body.replace("hi", "ho"), "application/json", headers=headers, signed=False
        )
    else:
        delivery = await fake.post_signed(body, "application/json", timestamp=int(time.time()) - 301)
    assert delivery.status == 401
    await asyncio.sleep(0.1)
    assert slack.adapter is not None and slack.adapter.outcomes == {}
    assert llm.requests == []
    assert fake.calls_to("chat.postMessage") == []
    assert len(fake.calls_to("auth.test")) == auth_calls
    assert slack.core is not None
    async with slack.core.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedEventRow)) == 0


async def test_a_recent_signature_is_accepted(slack: SlackHarness) -> None:
    fake = slack.fake
    body = json.dumps(fake.event_callback(fake.message_event("no mention: ignored")))
    delivery = await fake.post_signed(body, "application/json", timestamp=int(time.time()) - 200)
    assert delivery.status == 200


async def test_url_verification_challenge(slack: SlackHarness) -> None:
    body = json.dumps({"token": "x", "challenge": "abc123", "type": "url_verification"})
    delivery = await slack.fake.post_signed(body, "application/json")
    assert delivery.status == 200
    assert delivery.body == {"challenge": "abc123"}


async def test_socket_mode_event_is_acked_and_answered_once(
    socket_slack: SlackHarness, llm: FakeOpenAI
) -> None:
    slack = socket_slack
    assert slack.adapter is not None and slack.adapter.ready()
    assert slack.fake.connections == 1 and slack.fake.calls_to("apps.connections.open")
    said = await slack.say(f"{BOT} over the socket")
    assert [d.status for d in said.deliveries] == [200, 200]  # both envelopes acked
    assert await slack.wait_for_final_text(said.ts) == "Echo: Alice Liddell: over the socket"
    # Slack redelivers the mention with retry_attempt=1 (e.g. it missed the ack): no second reply.
    delivery = await slack.redeliver(said, retry_num=1, index=0)
    assert delivery.status == 200
    await slack.settle(said, deliveries={said.event_ids[0]: 2, said.event_ids[1]: 1})
    assert slack.texts("C0001", said.ts) == ["Echo: Alice Liddell: over the socket"]
    assert len(llm.requests) == 1
    assert slack.fake.events_url is not None
    # No HTTP endpoint in Socket Mode.
    status = (
        await slack.fake.post_signed(json.dumps({"type": "url_verification"}), "application/json")
    ).status
    assert status == 404


async def test_socket_mode_reconnects_after_slack_drops_the_socket(
    socket_slack: SlackHarness, llm: FakeOpenAI
) -> None:
    slack = socket_slack
    await slack.fake.drop_socket()
    await slack.fake.wait_until(lambda: slack.fake.connections >= 2, limit=15)
    said = await slack.say(f"{BOT} still there?")
    assert await slack.wait_for_final_text(said.ts) == "Echo: Alice Liddell: still there?"


async def test_stop_lets_a_streaming_reply_finish_and_refuses_new_events(
    slack: SlackHarness, llm: FakeOpenAI
) -> None:
    llm.enqueue(StreamReply.words("a reply that takes a little while", chunk_delay=0.05))
    said = await slack.say(f"{BOT} go", settle=False)
    adapter = slack.adapter
    assert adapter is not None
    await slack.fake.wait_until(lambda: bool(slack.bot_messages("C0001", said.ts)))
    assert adapter.in_flight >= 1
    await adapter.stop_receiving()
    assert not adapter.ready()
    # While the process shuts down, Slack is told to retry (another replica may take it).
    late = await slack.fake.deliver_event(slack.fake.message_event(f"{BOT} late"))
    assert late.status == 503
    await adapter.stop()  # waits for the reply in flight
    assert slack.texts("C0001", said.ts) == ["a reply that takes a little while"]
    assert len(llm.requests) == 1


async def test_socket_mode_stop_receiving_disconnects_but_replies_finish(
    socket_slack: SlackHarness, llm: FakeOpenAI
) -> None:
    slack = socket_slack
    llm.enqueue(StreamReply.words("still finishing after the socket closed", chunk_delay=0.05))
    said = await slack.say(f"{BOT} go", settle=False)
    adapter = slack.adapter
    assert adapter is not None
    await slack.fake.wait_until(lambda: bool(slack.bot_messages("C0001", said.ts)))
    await adapter.stop_receiving()
    await slack.fake.wait_until(lambda: not slack.fake._sockets)
    assert not adapter.ready()
    await adapter.stop()
    assert slack.texts("C0001", said.ts) == ["still finishing after the socket closed"]
