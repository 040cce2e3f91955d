"""What people see when Slack delivers one message several times: one reply, never a second post."""

from __future__ import annotations

import asyncio

from tests.fakes.openai_server import FakeOpenAI, StreamReply
from tests.slack_harness import SlackHarness

BOT = "<@UBOT>"


async def test_a_mention_its_message_event_and_their_retries_at_once_get_one_reply(
    slack: SlackHarness, llm: FakeOpenAI
) -> None:
    llm.enqueue(StreamReply.words("only once", first_delay=0.2))
    fake = slack.fake
    message = fake.message_event(f"{BOT} hello")
    mention = fake.mention_event(message)
    mention_id, message_id = fake.new_event_id(), fake.new_event_id()
    deliveries = await asyncio.gather(
        fake.deliver_event(mention, event_id=mention_id),
        fake.deliver_event(message, event_id=message_id),
        fake.deliver_event(mention, event_id=mention_id, retry_num=1),
        fake.deliver_event(message, event_id=message_id, retry_num=1, retry_reason="http_error"),
    )
    assert [d.status for d in deliveries] == [200] * 4
    assert slack.adapter is not None
    outcomes = [
        *await slack.adapter.wait_for_outcomes(mention_id, 2),
        *await slack.adapter.wait_for_outcomes(message_id, 2),
    ]
    assert sorted(outcomes) == ["answered", "duplicate", "duplicate", "duplicate"]
    assert slack.texts("C0001", str(message["ts"])) == ["only once"]
    assert len(fake.calls_to("chat.postMessage")) == 1  # not even a placeholder was posted twice
    assert len(llm.requests) == 1


async def test_a_late_retry_posts_nothing(slack: SlackHarness, llm: FakeOpenAI) -> None:
    said = await slack.say(f"{BOT} hello")
    posts = len(slack.fake.calls_to("chat.postMessage"))
    for index in (0, 1):
        delivery = await slack.redeliver(said, retry_num=1, index=index)
        assert delivery.status == 200
    outcomes = await slack.settle(said, deliveries={event_id: 2 for event_id in said.event_ids})
    assert sorted(outcomes) == ["answered", "duplicate", "duplicate", "duplicate"]
    assert len(slack.fake.calls_to("chat.postMessage")) == posts
    assert slack.texts("C0001", said.ts) == ["Echo: Alice Liddell: hello"]
    assert len(llm.requests) == 1
