"""Slack events → what the bot should do with them (pure functions: no I/O).

Conversation keys (contract, see the Slack section of README.md):
- channel or group DM: ConversationKey("slack", team, channel, thread_ts), where thread_ts is the
  mention's `thread_ts`, or its own `ts` for a top-level mention (the reply opens that thread);
- direct message: top-level messages of a DM are ONE conversation, thread id `DM_THREAD` ("dm"),
  answered at the top level of the DM; a thread inside a DM is its own conversation (its thread_ts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.types import ConversationKey

PLATFORM = "slack"
DM_THREAD = "dm"

# Subtypes that are people (or bots) talking; every other subtype (message_changed, message_deleted,
# channel_join, channel_topic, bot_add, ...) is ignored.
TALKING_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "bot_message", "me_message"})
_RESET = re.compile(r"^\s*(?:reset|forget)\s*[.!]?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message someone wrote, as the adapter needs it."""

    event_id: str
    team: str
    channel: str
    channel_type: str  # channel | group | im | mpim
    ts: str
    thread_ts: str | None
    user: str  # the author's user id (a bot's user id or bot id for bot messages)
    text: str  # raw Slack text (mrkdwn, entities escaped)
    mentioned: bool  # the bot was @-mentioned (app_mention, or its mention in a message event)
    from_bot: bool
    bot_name: str | None = None
    files: tuple[str, ...] = ()

    @property
    def is_dm(self) -> bool:
        return self.channel_type == "im"

    @property
    def reply_thread(self) -> str | None:
        """Where the answer goes: a thread ts, or None for the top level of a DM."""
        if self.is_dm:
            return self.thread_ts
        return self.thread_ts or self.ts

    @property
    def key(self) -> ConversationKey:
        if self.is_dm:
            return ConversationKey(PLATFORM, self.team, self.channel, self.thread_ts or DM_THREAD)
        return ConversationKey(PLATFORM, self.team, self.channel, self.thread_ts or self.ts)

    @property
    def dedup_id(self) -> str:
        """One id per Slack message, shared by its `message` and `app_mention` events."""
        return f"message:{self.team}:{self.channel}:{self.ts}"


def is_reset_request(text: str) -> bool:
    """ "@Threadline reset" (the mention already removed): forget this thread's history."""
    return bool(_RESET.match(text))


def _channel_type(event: Mapping[str, Any]) -> str:
    kind = event.get("channel_type")
    if isinstance(kind, str) and kind:
        return kind
    channel = str(event.get("channel", ""))
    return "im" if channel.startswith("D") else "channel"


def parse_event(body: Mapping[str, Any], *, bot_user_id: str, bot_id: str | None) -> Incoming | None:
    """The message an `app_mention` / `message` event carries; None for anything to ignore.

    Ignored: the bot's own messages (never a loop), edits, deletions, joins and every other subtype
    that is not someone talking, hidden events, and events without a channel or timestamp.
    """
    event = body.get("event")
    if not isinstance(event, Mapping):
        return None
    kind = event.get("type")
    if kind not in ("message", "app_mention"):
        return None
    subtype = event.get("subtype")
    if subtype not in TALKING_SUBTYPES or event.get("hidden"):
        return None
    sender_bot = event.get("bot_id")
    user = event.get("user")
    if user == bot_user_id or (bot_id is not None and sender_bot == bot_id):
        return None
    channel, ts = event.get("channel"), event.get("ts")
    if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
        return None
    from_bot = bool(sender_bot) or subtype == "bot_message"
    author = user if isinstance(user, str) and user else str(sender_bot or "")
    if not author:
        return None
    text = str(event.get("text") or "")
    channel_type = _channel_type(event)
    mentioned = kind == "app_mention" or (channel_type != "im" and f"<@{bot_user_id}>" in text)
    bot_profile = event.get("bot_profile")
    bot_name = event.get("username") or (
        bot_profile.get("name") if isinstance(bot_profile, Mapping) else None
    )
    files = tuple(
        str(f.get("name") or f.get("title") or "file")
        for f in event.get("files") or ()
        if isinstance(f, Mapping)
    )
    thread_ts = event.get("thread_ts")
    team = body.get("team_id") or event.get("team") or ""
    return Incoming(
        event_id=str(body.get("event_id") or ""),
        team=str(team),
        channel=channel,
        channel_type=channel_type,
        ts=ts,
        thread_ts=str(thread_ts) if thread_ts else None,
        user=author,
        text=text,
        mentioned=mentioned,
        from_bot=from_bot,
        bot_name=str(bot_name) if bot_name else None,
        files=files,
    )
