"""`/usage` and `/schedule` (names configurable with THREADLINE_SLACK_USAGE_COMMAND and
THREADLINE_SLACK_SCHEDULE_COMMAND). Every answer is ephemeral.

    /usage                                             this channel's and your tokens and cost (everyone)
    /schedule list                                     this channel's scheduled prompts (everyone)
    /schedule add MIN HOUR DAY MONTH WEEKDAY ZONE [--persona NAME] PROMPT…               (admins)
    /schedule remove ID                                                                  (admins)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bots.slack.commands import Reply, can_manage
from bots.slack.events import PLATFORM
from bots.slack.mrkdwn import escape, from_slack, to_mrkdwn
from bots.slack.users import UserDirectory
from core.app import Core
from core.schedules import ScheduleInvalid

log = logging.getLogger("threadline.slack")

FAILED = "⚠️ Something went wrong on our side; please try again."
SCHEDULES_NOT_ALLOWED = (
    "Only workspace admins and owners (and the people listed in THREADLINE_ADMINS) can add or remove "
    "schedules. `{command} list` shows this channel's."
)
_WORD = re.compile(r"\s*(\S+)")
_ID = re.compile(r"#?(\d+)")


def _ephemeral(respond: AsyncRespond) -> Reply:
    async def reply(text: str) -> None:
        await respond(text=text, response_type="ephemeral", replace_original=False)

    return reply


class UsageCommand:
    """`/usage`: open to everyone, answered only to the person who asked."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self.command = core.settings.slack_usage_command

    async def on_command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        reply = _ephemeral(respond)
        try:
            report = await self._core.usage.report(
                PLATFORM,
                str(command.get("team_id") or ""),
                str(command.get("channel_id") or ""),
                str(command.get("user_id") or ""),
            )
        except Exception:
            log.exception("%s failed", self.command)
            await reply(FAILED)
            return
        await reply(to_mrkdwn(report))


def schedule_usage(command: str) -> str:
    return "\n".join(
        [
            f"*{command}* — a persona posts a prompt in this channel on a schedule, in a new thread:",
            f"• `{command} list` — this channel's schedules",
            f"• `{command} add MIN HOUR DAY MONTH WEEKDAY ZONE PROMPT` — add one _(admins)_",
            f"   e.g. `{command} add 0 9 * * 1-5 Europe/Paris What are you working on today?` "
            "(weekdays at 09:00 Paris time)",
            "   add `--persona NAME` before the prompt to choose who answers "
            "(otherwise the channel's persona)",
            f"• `{command} remove ID` — remove one _(admins)_",
        ]
    )


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    cron: str
    timezone: str
    persona: str | None
    prompt: str


def _take(text: str) -> tuple[str, str] | None:
    """The first whitespace-separated word of `text` and the rest (None when `text` is blank)."""
    match = _WORD.match(text)
    if match is None:
        return None
    return match.group(1), text[match.end() :]


def parse_add(text: str) -> ScheduleRequest | None:
    """`MIN HOUR DAY MONTH WEEKDAY ZONE [--persona NAME] PROMPT…` (None when a part is missing).

    The prompt keeps its line breaks; `--persona NAME` may also come first.
    """
    persona: str | None = None
    words: list[str] = []
    rest = text
    while len(words) < 6:
        taken = _take(rest)
        if taken is None:
            return None
        word, rest = taken
        if word == "--persona" and persona is None and not words:
            named = _take(rest)
            if named is None:
                return None
            persona, rest = named
            continue
        words.append(word)
    taken = _take(rest)
    if taken is not None and taken[0] == "--persona" and persona is None:
        named = _take(taken[1])
        if named is None:
            return None
        persona, rest = named
    prompt = rest.strip()
    if not prompt:
        return None
    return ScheduleRequest(" ".join(words[:5]), words[5], persona.lower() if persona else None, prompt)


class ScheduleCommands:
    def __init__(self, core: Core, users: UserDirectory) -> None:
        self._core = core
        self._users = users
        self.command = core.settings.slack_schedule_command

    async def on_command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        reply = _ephemeral(respond)
        text = str(command.get("text") or "")
        taken = _take(text)
        sub, rest = (taken[0].lower(), taken[1]) if taken else ("help", "")
        team = str(command.get("team_id") or "")
        channel = str(command.get("channel_id") or "")
        user = str(command.get("user_id") or "")
        try:
            await reply(await self._dispatch(sub, rest, team=team, channel=channel, user=user))
        except Exception:
            log.exception("%s %s failed", self.command, sub)
            await reply(FAILED)

    async def _dispatch(self, sub: str, rest: str, *, team: str, channel: str, user: str) -> str:
        if sub == "list" and not rest.strip():
            return await self._list(team, channel)
        if sub == "add":
            request = parse_add(rest)
            if request is None:
                return schedule_usage(self.command)
            if not await can_manage(self._core, self._users, user):
                return SCHEDULES_NOT_ALLOWED.format(command=self.command)
            return await self._add(team, channel, user, request)
        if sub == "remove":
            match = _ID.fullmatch(rest.strip())
            if match is None:
                return schedule_usage(self.command)
            if not await can_manage(self._core, self._users, user):
                return SCHEDULES_NOT_ALLOWED.format(command=self.command)
            return await self._remove(team, int(match.group(1)))
        return schedule_usage(self.command)

    async def _list(self, team: str, channel: str) -> str:
        schedules = await self._core.schedules.in_scope(PLATFORM, team, channel)
        if not schedules:
            return f"No scheduled prompts in this channel. `{self.command}` explains how to add one."
        now = datetime.now(UTC)
        lines = ["*Scheduled prompts in this channel*"]
        lines.extend("• " + to_mrkdwn(schedule.describe(now)) for schedule in schedules)
        return "\n".join(lines)

    async def _add(self, team: str, channel: str, user: str, request: ScheduleRequest) -> str:
        if request.persona is not None and await self._core.personas.get(request.persona) is None:
            return f"There is no persona named `{escape(request.persona)}`. `/persona list` shows them all."
        # Slash command text comes escaped (&lt; &gt; &amp;) and may hold links: store what people meant.
        prompt = from_slack(request.prompt, user_name=lambda user_id: user_id)
        try:
            schedule = await self._core.schedules.add(
                PLATFORM,
                team,
                channel,
                cron=request.cron,
                timezone=request.timezone,
                prompt=prompt,
                persona_name=request.persona,
                created_by=user,
            )
        except ScheduleInvalid as exc:
            return f"⚠️ {escape(str(exc))}\n`{self.command}` explains the format."
        return (
            f"Scheduled: {to_mrkdwn(schedule.describe(datetime.now(UTC)))}\n"
            f"`{self.command} remove {schedule.id}` removes it."
        )

    async def _remove(self, team: str, schedule_id: int) -> str:
        if await self._core.schedules.remove(PLATFORM, team, schedule_id):
            return f"Removed scheduled prompt #{schedule_id}."
        return (
            f"There is no scheduled prompt #{schedule_id} here. `{self.command} list` shows this channel's."
        )
