"""Slack side of operations: /usage, /schedule, channel settings, and the scheduler's port
(scheduled prompts open a thread, a crashed reply is finalised) — end to end over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import select

from bots.slack.adapter import SlackAdapter
from bots.slack.operations import parse_add
from core.engine import Turn, TurnResult
from core.personas.service import PersonaSource
from core.scheduler import INTERRUPTED_NOTICE, Scheduler
from core.storage.models import MessageRow
from core.surface import Surface
from core.types import Author, ConversationKey
from tests.fakes.openai_server import FakeOpenAI, StreamReply
from tests.fakes.slack_server import FakeSlack
from tests.slack_harness import SlackHarness

BOT = "<@UBOT>"
ADMIN, MEMBER, LISTED = "U0ADMIN", "U0001", "U0LISTED"
TEAM = "T0001"


@pytest_asyncio.fixture
async def slack(tmp_path: Path, llm: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    fake = FakeSlack()
    fake.add_user(ADMIN, "ada", is_admin=True)
    fake.add_user(LISTED, "lee")
    async with SlackHarness.running(tmp_path, llm=llm, fake=fake, admins=[LISTED]) as harness:
        yield harness


async def _command(
    slack: SlackHarness, command: str, text: str, *, user: str = MEMBER, channel: str = "C0001"
) -> str:
    """Run a slash command; return the ephemeral answer the person sees."""
    fake = slack.fake
    before = len(fake.ephemeral)
    delivery = await fake.run_command(text, command=command, user=user, channel=channel)
    assert delivery.status == 200
    await fake.wait_until(lambda: len(fake.ephemeral) > before)
    answer = fake.ephemeral[-1]
    assert answer.get("response_type") == "ephemeral"
    return str(answer.get("text", ""))


def _adapter(slack: SlackHarness) -> SlackAdapter:
    assert slack.adapter is not None
    return slack.adapter


# -- /usage ----------------------------------------------------------------------------------------


async def test_usage_shows_this_channel_and_the_person_in_slack_format(
    slack: SlackHarness, llm: FakeOpenAI
) -> None:
    llm.enqueue(StreamReply.words("fine thanks", usage=(1000, 500)))
    await slack.say(f"{BOT} how are you?")
    answer = await _command(slack, "/usage", "")
    # gpt-4o-mini: 1,000 × $0.15/M + 500 × $0.60/M = $0.00045
    assert "*This channel*" in answer and "*You*" in answer  # Markdown bold became mrkdwn bold
    assert "**" not in answer
    assert answer.count("Today: 1,500 tokens, about $0.0004") == 2
    # Another person, another channel: nothing of theirs.
    other = await _command(slack, "/usage", "", user=ADMIN, channel="C0002")
    assert "1,500" not in other and other.count("no tokens") == 4


# -- /schedule -------------------------------------------------------------------------------------


def test_schedule_add_is_parsed_into_cron_zone_persona_and_prompt() -> None:
    parsed = parse_add("0 9 * * 1-5 Europe/Paris What are you\nworking on today?")
    assert parsed is not None
    assert (parsed.cron, parsed.timezone, parsed.persona) == ("0 9 * * 1-5", "Europe/Paris", None)
    assert parsed.prompt == "What are you\nworking on today?"
    for text in (
        "0 9 * * 1-5 UTC --persona Python Standup!",
        "--persona python  0 9 * * 1-5 UTC Standup!",
    ):
        parsed = parse_add(text)
        assert parsed is not None and parsed.persona == "python" and parsed.prompt == "Standup!"
    for incomplete in ("", "0 9 * * 1-5", "0 9 * * 1-5 UTC", "0 9 * * 1-5 UTC --persona python"):
        assert parse_add(incomplete) is None


async def test_schedule_add_list_remove(slack: SlackHarness) -> None:
    answer = await _command(
        slack, "/schedule", "add 0 9 * * 1-5 Europe/Paris What are you working on &amp; why?", user=ADMIN
    )
    assert answer.startswith("Scheduled: #1 `0 9 * * 1-5` (next ") and "Europe/Paris)" in answer
    assert "What are you working on &amp; why?" in answer  # stored as "&", shown escaped again
    assert "`/schedule remove 1` removes it." in answer
    assert slack.core is not None
    [stored] = await slack.core.schedules.in_scope("slack", TEAM, "C0001")
    assert (stored.cron, stored.timezone, stored.prompt) == (
        "0 9 * * 1-5",
        "Europe/Paris",
        "What are you working on & why?",
    )
    assert stored.created_by == ADMIN and stored.persona_name is None

    listed = await _command(slack, "/schedule", "list")  # everyone may list
    assert listed.splitlines()[0] == "*Scheduled prompts in this channel*"
    assert listed.splitlines()[1].startswith("• #1 `0 9 * * 1-5` (next ")
    assert "No scheduled prompts" in await _command(slack, "/schedule", "list", channel="C0002")

    assert await _command(slack, "/schedule", "remove #1", user=LISTED) == "Removed scheduled prompt #1."
    assert "There is no scheduled prompt #1" in await _command(slack, "/schedule", "remove 1", user=ADMIN)
    assert await slack.core.schedules.in_scope("slack", TEAM, "C0001") == []


async def test_schedule_changes_need_an_admin(slack: SlackHarness) -> None:
    assert slack.core is not None
    answer = await _command(slack, "/schedule", "add 0 9 * * * UTC Hello")
    assert answer.startswith("Only workspace admins and owners")
    assert await slack.core.schedules.in_scope("slack", TEAM, "C0001") == []
    await slack.core.schedules.add("slack", TEAM, "C0001", cron="0 9 * * *", timezone="UTC", prompt="Hi")
    assert (await _command(slack, "/schedule", "remove 1")).startswith("Only workspace admins and owners")
    assert len(await slack.core.schedules.in_scope("slack", TEAM, "C0001")) == 1


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("add 0 9 * * * Mars/Olympus Hello", "⚠️ Unknown time zone 'Mars/Olympus'"),
        ("add 0 25 * * * UTC Hello", "⚠️ '0 25 * * *' is not a valid cron expression"),
        ("add 0 9 * * 9 UTC Hello", "⚠️ '0 9 * * 9' is not a valid cron expression"),
        ("add 0 9 * * * UTC --persona nobody Hello", "There is no persona named `nobody`"),
    ],
)
async def test_invalid_schedules_are_explained(slack: SlackHarness, text: str, shown: str) -> None:
    answer = await _command(slack, "/schedule", text, user=ADMIN)
    assert answer.startswith(shown)
    assert slack.core is not None
    assert await slack.core.schedules.in_scope("slack", TEAM, "C0001") == []


@pytest.mark.parametrize("text", ["", "help", "add", "add 0 9 * * 1-5 UTC", "remove", "remove x", "list 2"])
async def test_bad_schedule_commands_get_usage_help(slack: SlackHarness, text: str) -> None:
    answer = await _command(slack, "/schedule", text, user=ADMIN)
    assert "`/schedule add MIN HOUR DAY MONTH WEEKDAY ZONE PROMPT`" in answer


async def test_a_scheduled_prompt_opens_a_thread_and_the_persona_answers_there(
    slack: SlackHarness, llm: FakeOpenAI
) -> None:
    await _command(slack, "/schedule", "add * * * * * UTC --persona python Any **news**?", user=ADMIN)
    assert slack.core is not None
    scheduler = Scheduler(slack.core, {"slack": _adapter(slack)})
    report = await scheduler.tick(datetime.now(UTC) + timedelta(minutes=2))
    assert report.fired == [1]
    await scheduler.wait_for_posts()
    [header] = [m for m in slack.fake.top_level("C0001") if m.user == slack.fake.bot_user_id]
    assert header.text == "⏰ Any *news*?"
    assert slack.texts("C0001", header.ts) == ["Echo: Scheduled prompt: Any *news*?"]
    python = await slack.core.personas.get("python")
    assert python is not None
    assert llm.requests[-1]["model"] == python.model
    assert llm.requests[-1]["messages"][-1]["content"] == "Scheduled prompt: Any **news**?"
    # People answer in that thread: it is a conversation like any other.
    follow_up = await slack.say("and tomorrow?", thread_ts=header.ts)
    assert slack.texts("C0001", follow_up.thread)[-1] == "Echo: Alice Liddell: and tomorrow?"


# -- channel settings ------------------------------------------------------------------------------


async def test_workspace_default_persona(slack: SlackHarness, llm: FakeOpenAI) -> None:
    assert slack.core is not None
    answer = await _command(slack, "/persona", "default python", user=ADMIN)
    assert answer.startswith("The workspace default is now *python*")
    resolved = await slack.core.personas.resolve(ConversationKey("slack", TEAM, "C0009", "t"))
    assert (resolved.persona.name, resolved.source) == ("python", PersonaSource.WORKSPACE)
    assert "*python* (the workspace default)" in await _command(slack, "/persona", "show", channel="C0009")
    await slack.say(f"{BOT} hi", channel="C0009")
    assert llm.requests[-1]["model"] == resolved.persona.model

    answer = await _command(slack, "/persona", "default reset", user=ADMIN)
    assert answer.startswith("The workspace default is back to the built-in *assistant*")
    resolved = await slack.core.personas.resolve(ConversationKey("slack", TEAM, "C0009", "t"))
    assert (resolved.persona.name, resolved.source) == ("assistant", PersonaSource.DEFAULT)

    answer = await _command(slack, "/persona", "default nobody", user=ADMIN)
    assert answer.startswith("There is no persona named `nobody`")
    assert (await _command(slack, "/persona", "default python")).startswith("Only workspace admins")


async def test_follow_ups_switched_off_and_on_by_command(slack: SlackHarness) -> None:
    first = await slack.say(f"{BOT} hello")
    answer = await _command(slack, "/persona", "followups off", user=ADMIN)
    assert answer.startswith("Follow-ups are *off*")
    assert "Follow-ups in threads: *off*" in await _command(slack, "/persona", "show")
    ignored = await slack.say("still there?", thread_ts=first.ts)
    assert await slack.settle(ignored) == ["ignored"]
    assert (await _command(slack, "/persona", "followups on", user=ADMIN)).startswith("Follow-ups are *on*")
    await slack.say("now?", thread_ts=first.ts)
    assert slack.texts("C0001", first.ts)[-1] == "Echo: Alice Liddell: now?"


async def test_other_bots_allowed_by_command(slack: SlackHarness) -> None:
    fake = slack.fake

    async def bot_mentions(text: str) -> list[str]:
        event = fake.message_event(f"{BOT} {text}", user="U0OTHERBOT", bot_id="B0OTHER", username="helper")
        event_id = fake.new_event_id()
        await fake.deliver_event(fake.mention_event(event), event_id=event_id)
        return await _adapter(slack).wait_for_outcomes(event_id)

    assert await bot_mentions("ping") == ["ignored"]
    assert (await _command(slack, "/persona", "bots on", user=ADMIN)).startswith("Other bots are *allowed*")
    assert "other bots: *allowed*" in await _command(slack, "/persona", "show")
    assert await bot_mentions("pong") == ["answered"]
    assert (await _command(slack, "/persona", "bots off", user=LISTED)).startswith("Other bots are *ignored*")
    assert await bot_mentions("ping again") == ["ignored"]


@pytest.mark.parametrize("text", ["followups", "followups maybe", "bots yes please", "default"])
async def test_bad_settings_commands_get_usage_help(slack: SlackHarness, text: str) -> None:
    answer = await _command(slack, "/persona", text, user=ADMIN)
    assert "`/persona followups on|off`" in answer and "`/persona default NAME`" in answer


async def test_settings_commands_need_an_admin(slack: SlackHarness) -> None:
    assert slack.core is not None
    assert (await _command(slack, "/persona", "followups off")).startswith("Only workspace admins")
    assert (await _command(slack, "/persona", "bots on")).startswith("Only workspace admins")
    settings = await slack.core.channels.get("slack", TEAM, "C0001")
    assert settings.follow_up_in_threads is True and settings.allow_bots is False


# -- the scheduler's port: crash recovery ----------------------------------------------------------


@pytest.mark.parametrize(("channel", "channel_type"), [("C0001", "channel"), ("D0001", "im")])
async def test_a_reply_left_streaming_is_finalised_through_surface_for(
    slack: SlackHarness, channel: str, channel_type: str
) -> None:
    dm = channel_type == "im"
    said = await slack.say("tell me" if dm else f"{BOT} tell me", channel=channel, channel_type=channel_type)
    thread = None if dm else said.ts  # a DM's top level is one conversation, answered at the top level
    key = ConversationKey("slack", TEAM, channel, "dm" if dm else said.ts)
    core = slack.core
    assert core is not None
    # Make the stored reply look like the process died while streaming it.
    async with core.db.transaction() as session:
        row = (
            await session.scalars(
                select(MessageRow).where(MessageRow.role == "assistant").order_by(MessageRow.id.desc())
            )
        ).first()
        assert row is not None
        row.status = "streaming"
        row.content = "Half of *an* answer"
        row.created_at = datetime.now(UTC) - timedelta(minutes=5)
    scheduler = Scheduler(core, {"slack": _adapter(slack)})
    assert await scheduler.recover(datetime.now(UTC)) == 1
    [reply] = slack.bot_messages(channel, thread)
    assert reply.text == f"Half of _an_ answer\n\n{INTERRUPTED_NOTICE}"
    # The conversation stays usable, and a new reply lands in the same place.
    result = await core.engine.handle_turn(
        Turn(key, Author(MEMBER, "Alice Liddell"), "again"), _adapter(slack).surface_for(key)
    )
    assert result.status == "complete"
    assert slack.texts(channel, thread)[-1] == "Echo: Alice Liddell: again"


# -- received_at -----------------------------------------------------------------------------------


async def test_turns_are_timed_from_when_the_event_reached_the_adapter(
    slack: SlackHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert slack.core is not None
    engine = slack.core.engine
    seen: list[tuple[Turn, float]] = []
    original = engine.handle_turn

    async def spy(turn: Turn, surface: Surface) -> TurnResult:
        seen.append((turn, time.monotonic()))
        return await original(turn, surface)

    monkeypatch.setattr(engine, "handle_turn", spy)
    before = time.monotonic()
    await slack.say(f"{BOT} hi")
    [(turn, called)] = seen
    # Taken on arrival: before the adapter looked the author's name up, not when the engine was called.
    [lookup] = slack.fake.calls_to("users.info")
    assert turn.received_at is not None and before <= turn.received_at <= lookup.at <= called
