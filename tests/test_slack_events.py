"""Slack event → Incoming: what is ignored, which conversation a message belongs to, where replies go."""

from __future__ import annotations

from typing import Any

import pytest

from bots.slack.events import DM_THREAD, is_reset_request, parse_event
from core.types import ConversationKey

BOT_USER, BOT_ID = "UBOT", "BBOT"


def _body(**event: Any) -> dict[str, Any]:
    base = {
        "type": "message",
        "channel": "C1",
        "user": "U1",
        "text": "hi",
        "ts": "100.000001",
        "channel_type": "channel",
    }
    return {"team_id": "T1", "event_id": "Ev1", "event": {**base, **event}}


def _parse(**event: Any) -> Any:
    return parse_event(_body(**event), bot_user_id=BOT_USER, bot_id=BOT_ID)


def test_top_level_mention_opens_a_thread_on_itself() -> None:
    incoming = _parse(type="app_mention", text=f"<@{BOT_USER}> hi")
    assert incoming is not None and incoming.mentioned
    assert incoming.reply_thread == "100.000001"
    assert incoming.key == ConversationKey("slack", "T1", "C1", "100.000001")


def test_mention_in_a_thread_stays_in_the_thread() -> None:
    incoming = _parse(type="app_mention", text=f"<@{BOT_USER}> hi", thread_ts="50.000001")
    assert incoming is not None
    assert incoming.reply_thread == "50.000001"
    assert incoming.key.thread == "50.000001"


def test_message_event_with_the_mention_counts_as_a_mention() -> None:
    incoming = _parse(text=f"hey <@{BOT_USER}>")
    assert incoming is not None and incoming.mentioned
    plain = _parse(text="hey <@U2>")
    assert plain is not None and not plain.mentioned


def test_mention_and_message_events_share_one_dedup_id() -> None:
    a = _parse(type="app_mention", text=f"<@{BOT_USER}> hi")
    b = _parse(text=f"<@{BOT_USER}> hi")
    assert a is not None and b is not None and a.dedup_id == b.dedup_id


def test_dm_top_level_is_one_conversation_answered_at_top_level() -> None:
    first = _parse(channel="D1", channel_type="im", ts="1.0")
    second = _parse(channel="D1", channel_type="im", ts="2.0")
    assert first is not None and second is not None
    assert first.key == second.key == ConversationKey("slack", "T1", "D1", DM_THREAD)
    assert first.reply_thread is None
    in_thread = _parse(channel="D1", channel_type="im", ts="3.0", thread_ts="2.0")
    assert in_thread is not None and in_thread.key.thread == "2.0" and in_thread.reply_thread == "2.0"


@pytest.mark.parametrize(
    "event",
    [
        {"user": BOT_USER},
        {"bot_id": BOT_ID, "user": "U9"},
        {"subtype": "message_changed", "hidden": True},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"subtype": "channel_topic"},
        {"type": "reaction_added"},
        {"channel": None},
    ],
)
def test_ignored(event: dict[str, Any]) -> None:
    assert _parse(**event) is None


@pytest.mark.parametrize("subtype", ["file_share", "thread_broadcast"])
def test_people_talking_subtypes_are_kept(subtype: str) -> None:
    incoming = _parse(subtype=subtype, files=[{"name": "report.pdf"}])
    assert incoming is not None and not incoming.from_bot


def test_other_bots_are_marked() -> None:
    incoming = _parse(subtype="bot_message", user=None, bot_id="B2", username="deploybot")
    assert (
        incoming is not None
        and incoming.from_bot
        and incoming.user == "B2"
        and incoming.bot_name == "deploybot"
    )


@pytest.mark.parametrize("text", ["reset", "Reset!", " forget ", "reset."])
def test_reset_words(text: str) -> None:
    assert is_reset_request(text)


@pytest.mark.parametrize("text", ["reset the router please", "how do I reset?", ""])
def test_not_reset(text: str) -> None:
    assert not is_reset_request(text)
