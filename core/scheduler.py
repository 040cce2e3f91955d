"""Background jobs: scheduled prompts, retention, de-duplication expiry, recovery of interrupted replies.

APScheduler only paces the jobs. Every job takes `now`, so tests drive it with their own clock,
and every run is claimed in the database first (`processed_events`), so with several replicas
each scheduled prompt fires once per tick and each maintenance run happens once per period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import delete, or_, select, update

from core.app import Core
from core.engine import Turn
from core.ports import PlatformPort
from core.schedules import Schedule
from core.storage.models import ConversationRow, MessageRow
from core.streaming.splitting import ReplySplitter
from core.types import Author, ConversationKey

log = logging.getLogger("threadline.scheduler")

CLAIM_PLATFORM = "scheduler"
MISFIRE_GRACE = timedelta(minutes=10)  # a prompt missed by more than this (service down) is skipped
# A reply still "streaming" THREADLINE_RECOVERY_AFTER_SECONDS (90) after it began, without a lease,
# was cut off by a crash.
INTERRUPTED_NOTICE = "⚠️ This reply was interrupted (Threadline restarted) and is incomplete."
SCHEDULER_AUTHOR = Author("scheduler", "Scheduled prompt")


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:  # SQLite hands back naive UTC datetimes
        return moment.replace(tzinfo=UTC)
    return moment


@dataclass(frozen=True, slots=True)
class TickReport:
    fired: list[int]
    skipped: list[int]


class Scheduler:
    def __init__(
        self,
        core: Core,
        ports: Mapping[str, PlatformPort],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._core = core
        self._ports = ports
        self._now = now
        self._aps: AsyncIOScheduler | None = None
        self._turns: set[asyncio.Task[None]] = set()

    async def start(self, tick_seconds: float = 20.0) -> None:
        await self.recover(self._now())
        self._aps = AsyncIOScheduler(timezone=UTC)
        self._aps.add_job(self._job(self.tick), "interval", seconds=tick_seconds, id="prompts")
        self._aps.add_job(self._job(self.recover), "interval", seconds=60, id="recovery")
        self._aps.add_job(self._job(self.maintain), "interval", minutes=15, id="maintenance")
        self._aps.start()

    async def stop(self) -> None:
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        if self._turns:
            await asyncio.wait(self._turns, timeout=30)

    def _job(self, work: Callable[[datetime], object]) -> Callable[[], object]:
        async def run() -> None:
            try:
                await work(self._now())  # type: ignore[misc]
            except Exception:
                log.exception("scheduled job %s failed", getattr(work, "__name__", work))

        return run

    async def _claim(self, name: str) -> bool:
        return await self._core.events.claim(CLAIM_PLATFORM, name)

    # -- scheduled prompts -------------------------------------------------------------------------

    async def tick(self, now: datetime) -> TickReport:
        """Fire every schedule whose next time has come (once across replicas)."""
        fired: list[int] = []
        skipped: list[int] = []
        for schedule, last_run in await self._schedules_with_last_run():
            fire_time = schedule.trigger().get_next_fire_time(None, last_run + timedelta(seconds=1))
            if fire_time is None or fire_time > now:
                continue
            await self._core.schedules.mark_run(schedule.id, fire_time)
            if now - fire_time > MISFIRE_GRACE:
                log.info("schedule #%s missed %s while the service was down; skipped", schedule.id, fire_time)
                skipped.append(schedule.id)
                continue
            if not await self._claim(f"schedule:{schedule.id}:{fire_time.isoformat()}"):
                continue
            fired.append(schedule.id)
            task = asyncio.create_task(self._post(schedule))
            self._turns.add(task)
            task.add_done_callback(self._turns.discard)
        return TickReport(fired, skipped)

    async def wait_for_posts(self) -> None:
        if self._turns:
            await asyncio.wait(set(self._turns))

    async def _schedules_with_last_run(self) -> list[tuple[Schedule, datetime]]:
        return [
            (schedule, _aware(last_run) or self._now())
            for schedule, last_run in await self._core.schedules.all_with_last_run()
            if schedule.platform in self._ports
        ]

    async def _post(self, schedule: Schedule) -> None:
        port = self._ports[schedule.platform]
        try:
            key, surface = await port.open_thread(
                schedule.workspace, schedule.channel, f"⏰ {schedule.prompt}"
            )
            if schedule.persona_name and await self._core.personas.get(schedule.persona_name):
                await self._core.personas.set_thread(key, schedule.persona_name)
            await self._core.engine.handle_turn(Turn(key, SCHEDULER_AUTHOR, schedule.prompt), surface)
        except Exception:
            log.exception("scheduled prompt #%s could not be posted", schedule.id)

    # -- maintenance -------------------------------------------------------------------------------

    async def maintain(self, now: datetime) -> None:
        if not await self._claim(f"maintenance:{now:%Y-%m-%dT%H}:{now.minute // 15}"):
            return
        await self.expire_events(now)
        await self.apply_retention(now)

    async def expire_events(self, now: datetime) -> int:
        removed = await self._core.events.forget_before(
            now - timedelta(hours=self._core.settings.dedup_ttl_hours)
        )
        if removed:
            log.info("forgot %d processed event ids", removed)
        return removed

    async def apply_retention(self, now: datetime) -> int:
        """Delete conversations idle longer than the retention period, with their messages."""
        days = self._core.settings.retention_days
        if days <= 0:
            return 0
        cutoff = now - timedelta(days=days)
        async with self._core.db.transaction() as session:
            idle = select(ConversationRow.id).where(
                ConversationRow.last_active_at < cutoff,
                or_(ConversationRow.lease_owner.is_(None), ConversationRow.lease_expires_at < now),
            )
            ids = list((await session.scalars(idle)).all())
            if ids:
                await session.execute(delete(MessageRow).where(MessageRow.conversation_id.in_(ids)))
                await session.execute(delete(ConversationRow).where(ConversationRow.id.in_(ids)))
        if ids:
            log.info("retention: deleted %d conversations idle for more than %d days", len(ids), days)
        return len(ids)

    # -- recovery ----------------------------------------------------------------------------------

    async def recover(self, now: datetime) -> int:
        """Finalise replies left "streaming" by a crashed process, so no "thinking…" stays forever."""
        async with self._core.db.session() as session:
            rows = (
                await session.execute(
                    select(MessageRow, ConversationRow)
                    .join(ConversationRow, MessageRow.conversation_id == ConversationRow.id)
                    .where(
                        MessageRow.status == "streaming",
                        MessageRow.created_at
                        < now - timedelta(seconds=self._core.settings.recovery_after_seconds),
                        or_(ConversationRow.lease_owner.is_(None), ConversationRow.lease_expires_at < now),
                    )
                )
            ).all()
        recovered = 0
        for message, conversation in rows:
            if await self._take_interrupted(message.id):
                key = ConversationKey(
                    conversation.platform, conversation.workspace, conversation.channel, conversation.thread
                )
                await self._finalise_on_platform(
                    key, message.content, list(message.platform_message_ids or [])
                )
                recovered += 1
        if recovered:
            log.info("recovered %d interrupted replies", recovered)
        return recovered

    async def _take_interrupted(self, message_id: int) -> bool:
        async with self._core.db.transaction() as session:
            result = await session.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id, MessageRow.status == "streaming")
                .values(status="interrupted", finish_reason=None)
            )
            return bool(getattr(result, "rowcount", 0))

    async def _finalise_on_platform(self, key: ConversationKey, text: str, message_ids: list[str]) -> None:
        port = self._ports.get(key.platform)
        if port is None or not message_ids:
            return
        surface = port.surface_for(key)
        limits = surface.limits
        splitter = ReplySplitter(surface.render, limits.max_length, limits.length_unit)
        splitter.append(text)
        parts = [part.text for part in splitter.finish(INTERRUPTED_NOTICE)]
        try:
            # Parts before the last known message were final already; rewrite from there on.
            start = min(len(message_ids), len(parts)) - 1
            for index in range(start, len(parts)):
                if index < len(message_ids):
                    await surface.edit(message_ids[index], parts[index])
                else:
                    await surface.post(parts[index])
        except Exception:
            log.exception("could not finalise interrupted reply in %s", key.describe())
