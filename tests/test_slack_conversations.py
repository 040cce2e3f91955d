"""End to end over HTTP: mentions, follow-ups, DMs, resets, streaming — what people see in Slack."""

from __future__ import annotations

import re

from bots.slack.adapter import RESET_DONE
from bots.slack.mrkdwn import unescape
from bots.slack.surface import MAX_MESSAGE_BYTES
from tests.fakes.openai_server import FakeOpenAI, StreamReply
from tests.slack_harness import SlackHarness

BOT = "<@UBOT>"


def _user_turns(llm: FakeOpenAI, index: int = -1) -> list[str]:
    return [m["content"] for m in llm.requests[index]["messages"] if m["role"] == "user"]


async def test_mention_is_streamed_into_a_thread_with_the_exact_final_text(
    slack: SlackHarness, llm: FakeOpenAI
) -> None:
    llm.enqueue(StreamReply.words("Here is **bold** and `a < b` & more.", chunk_delay=0.01))
    said = await slack.say(f"{BOT} explain <@U0001> &lt;tags&gt;")
    assert await slack.wait_for_final_text(said.ts) == "Here is *bold* and `a &lt; b` &amp; more."
    # The model read the person's name and the unescaped text, without the bot mention.
    assert _user_turns(llm) == ["Alice Liddell: explain @Alice Liddell <tags>"]
    [reply] = slack.bot_messages("C0001", said.ts)
    assert reply.versions[0] == "_Thinking…_"  # the placeholder came first, then edits
    assert len(reply.versions) >= 2
    # Both events of the mention (app_mention + message) were handled, and answered once.
    assert sorted(await slack.settle(said)) == ["answered", "duplicate"]
    assert len(llm.requests) == 1


async def test_follow_up_in_the_thread_needs_no_mention(slack: SlackHarness, llm: FakeOpenAI) -> None:
    first = await slack.say(f"{BOT} my name is Ann")
    await slack.say("what is my name?", thread_ts=first.ts)
    texts = slack.texts("C0001", first.ts)
    assert texts == ["Echo: Alice Liddell: my name is Ann", "Echo: Alice Liddell: what is my name?"]
    # The second request carried the thread's history.
    assert _user_turns(llm) == ["Alice Liddell: my name is Ann", "Alice Liddell: what is my name?"]
    assert len(slack.fake.calls_to("users.info")) == 1  # the name was cached


async def test_unrelated_messages_are_not_answered(slack: SlackHarness, llm: FakeOpenAI) -> None:
    top = await slack.say("just chatting")
    other_thread = await slack.say("in a thread the bot is not part of", thread_ts=top.ts)
    assert await slack.settle(top) == ["ignored"]
    assert await slack.settle(other_thread) == ["ignored"]
    assert llm.requests == [] and slack.fake.calls_to("chat.postMessage") == []


async def test_follow_ups_can_be_switched_off_per_channel(slack: SlackHarness, llm: FakeOpenAI) -> None:
    assert slack.core is not None
    await slack.core.channels.update("slack", slack.fake.team_id, "C0001", follow_up_in_threads=False)
    first = await slack.say(f"{BOT} hi")
    second = await slack.say("and now?", thread_ts=first.ts)
    assert await slack.settle(second) == ["ignored"]
    assert len(slack.texts("C0001", first.ts)) == 1


async def test_direct_messages_are_one_conversation(slack: SlackHarness, llm: FakeOpenAI) -> None:
    await slack.say("hello there", channel="D0001", channel_type="im")
    await slack.say("second message", channel="D0001", channel_type="im")
    # Answered at the top level of the DM, no mention needed, with the DM's history.
    assert slack.texts("D0001", None) == [
        "Echo: Alice Liddell: hello there",
        "Echo: Alice Liddell: second message",
    ]
    assert _user_turns(llm) == ["Alice Liddell: hello there", "Alice Liddell: second message"]


async def test_bot_messages_are_ignored_unless_the_channel_allows_bots(
    slack: SlackHarness, llm: FakeOpenAI
) -> None:
    fake = slack.fake
    event = fake.message_event(f"{BOT} beep", user="U0BOT2", bot_id="B0002", channel="C0002")
    delivery_id = fake.new_event_id()
    await fake.deliver_event(event, event_id=delivery_id)
    assert slack.adapter is not None
    assert await slack.adapter.wait_for_outcomes(delivery_id) == ["ignored"]
    assert llm.requests == []

    assert slack.core is not None
    await slack.core.channels.update("slack", fake.team_id, "C0002", allow_bots=True)
    event = fake.message_event(f"{BOT} beep again", user="U0BOT2", bot_id="B0002", channel="C0002")
    delivery_id = fake.new_event_id()
    await fake.deliver_event(event, event_id=delivery_id)
    assert await slack.adapter.wait_for_outcomes(delivery_id) == ["answered"]
    assert slack.texts("C0002", str(event["ts"])) == ["Echo: U0BOT2: beep again"]
    # Another bot is never answered as a thread follow-up (two bots would talk forever).
    follow_up = fake.message_event(
        "beep?", user="U0BOT2", bot_id="B0002", channel="C0002", thread_ts=event["ts"]
    )
    delivery_id = fake.new_event_id()
    await fake.deliver_event(follow_up, event_id=delivery_id)
    assert await slack.adapter.wait_for_outcomes(delivery_id) == ["ignored"]
    assert len(llm.requests) == 1


async def test_own_messages_and_edits_never_trigger_a_reply(slack: SlackHarness, llm: FakeOpenAI) -> None:
    said = await slack.say(f"{BOT} hi")
    # The fake echoes the bot's post (message) and each edit (message_changed) back, like Slack.
    await slack.fake.wait_until(lambda: not slack.fake._background)
    assert len(llm.requests) == 1
    assert len(slack.fake.calls_to("chat.postMessage")) == 1
    assert len(slack.texts("C0001", said.ts)) == 1


async def test_reset_in_a_thread_forgets_its_history(slack: SlackHarness, llm: FakeOpenAI) -> None:
    first = await slack.say(f"{BOT} remember 42")
    reset = await slack.say(f"{BOT} reset", thread_ts=first.ts)
    assert "reset" in await slack.settle(reset)
    assert slack.texts("C0001", first.ts)[-1] == RESET_DONE
    await slack.say("what did I say?", thread_ts=first.ts)  # still followed, without a mention
    assert _user_turns(llm) == ["Alice Liddell: what did I say?"]  # the history is gone
    again = await slack.say(f"{BOT} reset", thread_ts=first.ts)
    assert "reset" in await slack.settle(again)
    assert slack.texts("C0001", first.ts)[-1] == RESET_DONE


async def test_a_rate_limited_edit_still_ends_with_the_exact_text(
    slack: SlackHarness, llm: FakeOpenAI
) -> None:
    answer = "one two three four five six seven eight nine ten"
    llm.enqueue(StreamReply.words(answer, chunk_delay=0.02))
    slack.fake.fail("chat.update", retry_after=0.3, times=2)
    said = await slack.say(f"{BOT} count")
    assert await slack.wait_for_final_text(said.ts) == answer
    errors = [call.error for call in slack.fake.calls_to("chat.update")]
    assert errors.count("ratelimited") == 2 and errors[-1] is None  # refused twice, then accepted


def _deconvert(parts: list[str]) -> str:
    """Undo what the Slack side added: entities, and the fence lines that close/reopen across parts."""
    out: list[str] = []
    in_code = False
    for index, part in enumerate(parts):
        lines = unescape(part).split("\n")
        if in_code and index > 0:
            assert lines[0] == "```", "a part that starts inside code reopens the fence"
            lines = lines[1:]
        for line in lines:
            if line.startswith("```"):
                in_code = not in_code
        if in_code and index < len(parts) - 1:
            assert lines[-1] == "```", "a part that ends inside code closes the fence"
            lines = lines[:-1]
            in_code = True
        out.append("\n".join(lines))
    return "".join(out)


async def test_a_long_answer_with_code_is_split_within_the_limit(
    slack: SlackHarness, llm: FakeOpenAI
) -> None:
    paragraphs = []
    for n in range(60):
        paragraphs.append(
            f"Paragraph {n} says a < b & c > d, in prose that goes on for a while to fill space."
        )
        if n % 5 == 0:
            code = "\n".join(f"    if x{k} < y{k} and z & {k}: print('<{k}>')" for k in range(12))
            paragraphs.append(f"```\n{code}\n```")
    answer = "\n\n".join(paragraphs)
    assert len(answer) >= 10_000
    llm.enqueue(StreamReply(chunks=[answer[i : i + 97] for i in range(0, len(answer), 97)]))
    said = await slack.say(f"{BOT} long please")
    await slack.wait_for_final_text(said.ts)
    parts = slack.texts("C0001", said.ts)
    assert len(parts) >= 4
    assert all(len(p.encode()) <= MAX_MESSAGE_BYTES for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)  # every part renders its code as code
    assert _deconvert(parts) == answer
    assert not any(re.search(r"<(?!https?:)", p) for p in parts)  # no raw angle brackets reach Slack


async def test_reset_in_a_direct_message(slack: SlackHarness, llm: FakeOpenAI) -> None:
    await slack.say("remember 42", channel="D0001", channel_type="im")
    reset = await slack.say("reset", channel="D0001", channel_type="im")
    assert await slack.settle(reset) == ["reset"]
    assert slack.texts("D0001", None)[-1] == RESET_DONE
    await slack.say("what number?", channel="D0001", channel_type="im")
    assert _user_turns(llm) == ["Alice Liddell: what number?"]
