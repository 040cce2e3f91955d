"""Scheduled prompts: a persona posts in a channel on a cron schedule, in a time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import delete, select

from core.storage.database import Database
from core.storage.models import ScheduleRow

MAX_PROMPT = 2000
MAX_PER_CHANNEL = 20


class ScheduleInvalid(ValueError):
    """A human explanation of what is wrong with a schedule."""


@dataclass(frozen=True, slots=True)
class Schedule:
    id: int
    platform: str
    workspace: str
    channel: str
    cron: str
    timezone: str
    prompt: str
    persona_name: str | None
    created_by: str

    def trigger(self) -> CronTrigger:
        return cron_trigger(self.cron, self.timezone)

    def next_run(self, now: datetime) -> datetime | None:
        result: datetime | None = self.trigger().get_next_fire_time(None, now)
        return result

    def describe(self, now: datetime) -> str:
        upcoming = self.next_run(now)
        when = f"next {upcoming:%a %d %b %H:%M} {self.timezone}" if upcoming else "no future run"
        persona = f" as {self.persona_name}" if self.persona_name else ""
        return f"#{self.id} `{self.cron}` ({when}){persona}: {self.prompt}"


_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _weekday_field(field: str) -> str:
    """Standard cron weekdays (0 or 7 = Sunday) as day names: APScheduler 3 counts from Monday = 0."""
    if field == "*" or field.isalpha():
        return field
    days: list[str] = []
    for token in field.split(","):
        span, _, step_text = token.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            first, last = int(low), int(high)
        else:
            first = last = int(span)
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last and step >= 1):
            raise ValueError(f"weekday '{token}' is out of range (0–7, 0 and 7 are Sunday)")
        days.extend(_CRON_DAYS[day] for day in range(first, last + 1, step))
    return ",".join(dict.fromkeys(days))


def cron_trigger(cron: str, timezone: str) -> CronTrigger:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleInvalid(
            f"Unknown time zone '{timezone}': use a name like Europe/Paris or UTC."
        ) from None
    fields = cron.split()
    if len(fields) != 5:
        raise ScheduleInvalid(
            f"'{cron}' is not a cron expression: it needs 5 fields (minute hour day month weekday), "
            "e.g. '0 9 * * 1-5' for weekdays at 09:00."
        )
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=_weekday_field(weekday), timezone=zone
        )
    except ValueError as exc:
        raise ScheduleInvalid(f"'{cron}' is not a valid cron expression: {exc}.") from None


def _schedule(row: ScheduleRow) -> Schedule:
    return Schedule(
        row.id,
        row.platform,
        row.workspace,
        row.channel,
        row.cron,
        row.timezone,
        row.prompt,
        row.persona_name,
        row.created_by,
    )


class ScheduleService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self,
        platform: str,
        workspace: str,
        channel: str,
        *,
        cron: str,
        timezone: str,
        prompt: str,
        persona_name: str | None = None,
        created_by: str = "",
    ) -> Schedule:
        cron = " ".join(cron.split())
        cron_trigger(cron, timezone)
        prompt = prompt.strip()
        if not prompt:
            raise ScheduleInvalid("The prompt is empty: say what the persona should post.")
        if len(prompt) > MAX_PROMPT:
            raise ScheduleInvalid(f"The prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT:,}.")
        if len(await self.in_scope(platform, workspace, channel)) >= MAX_PER_CHANNEL:
            raise ScheduleInvalid(f"This channel already has {MAX_PER_CHANNEL} schedules; remove one first.")
        async with self._db.transaction() as session:
            row = ScheduleRow(
                platform=platform,
                workspace=workspace,
                channel=channel,
                cron=cron,
                timezone=timezone,
                prompt=prompt,
                persona_name=persona_name,
                created_by=created_by,
            )
            session.add(row)
            await session.flush()
            return _schedule(row)

    async def in_scope(self, platform: str, workspace: str, channel: str | None = None) -> list[Schedule]:
        query = select(ScheduleRow).where(
            ScheduleRow.platform == platform, ScheduleRow.workspace == workspace
        )
        if channel is not None:
            query = query.where(ScheduleRow.channel == channel)
        async with self._db.session() as session:
            return [_schedule(row) for row in (await session.scalars(query.order_by(ScheduleRow.id))).all()]

    async def all_with_last_run(self) -> list[tuple[Schedule, datetime]]:
        """Every schedule with its last run (its creation, if it never ran), in one query: the
        scheduler asks every tick."""
        async with self._db.session() as session:
            rows = (await session.scalars(select(ScheduleRow))).all()
            return [(_schedule(row), row.last_run_at or row.created_at) for row in rows]

    async def get(self, schedule_id: int) -> Schedule | None:
        async with self._db.session() as session:
            row = await session.get(ScheduleRow, schedule_id)
            return _schedule(row) if row else None

    async def remove(self, platform: str, workspace: str, schedule_id: int) -> bool:
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(ScheduleRow).where(
                    ScheduleRow.id == schedule_id,
                    ScheduleRow.platform == platform,
                    ScheduleRow.workspace == workspace,
                )
            )
            return bool(getattr(result, "rowcount", 0))

    async def mark_run(self, schedule_id: int, when: datetime) -> None:
        async with self._db.transaction() as session:
            row = await session.get(ScheduleRow, schedule_id)
            if row is not None:
                row.last_run_at = when
