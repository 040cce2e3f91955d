"""`/schedule add|list|remove`: a persona posts a prompt in this channel on a cron schedule.

A schedule belongs to the channel it was added in (a thread's parent channel when run in a thread).
Each run posts "⏰ prompt" in the channel and the answer in a thread opened from it (see
`DiscordAdapter.open_thread`). Adding and removing need the persona-change permission; answers are
ephemeral.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bots.discord.permissions import schedule_admin
from bots.discord.personas import persona_choices
from bots.discord.replies import MAX_REPLY, clip, say
from bots.discord.routing import PLATFORM, command_scope
from core.schedules import MAX_PROMPT, ScheduleInvalid

if TYPE_CHECKING:
    from typing import TypeAlias

    from bots.discord.client import ThreadlineClient

    Interaction: TypeAlias = discord.Interaction[ThreadlineClient]
else:
    Interaction = discord.Interaction

CHOICES_MAX = 25  # Discord shows at most 25 autocomplete choices
CHOICE_NAME_MAX = 100
OUTSIDE_SERVER = "Schedules belong to a server's channels: run `/schedule` in one."
COMMON_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Moscow",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Africa/Lagos",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)


@functools.cache
def _all_zones() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def timezone_choices(typed: str) -> list[str]:
    """Common zones first, then every IANA name containing what was typed ("new york" finds New_York)."""
    needle = "_".join(typed.strip().lower().split())
    if not needle:
        return list(COMMON_ZONES)
    common = [zone for zone in COMMON_ZONES if needle in zone.lower()]
    starting = [
        zone
        for zone in _all_zones()
        if zone.lower().startswith(needle) or zone.lower().rsplit("/", 1)[-1].startswith(needle)
    ]
    containing = [zone for zone in _all_zones() if needle in zone.lower()]
    return list(dict.fromkeys(common + starting + containing))[:CHOICES_MAX]


def canonical_zone(typed: str) -> str:
    """The IANA spelling of a zone typed in any case ("europe/paris"); anything else unchanged."""
    typed = typed.strip()
    by_lower = {zone.lower(): zone for zone in _all_zones()}
    return by_lower.get(typed.lower(), typed)


class ScheduleCommands(app_commands.Group):
    def __init__(self) -> None:
        super().__init__(name="schedule", description="Prompts the bot posts in this channel on a schedule")

    @app_commands.command(
        name="add", description="Post a prompt in this channel on a schedule (one thread per run)"
    )
    @app_commands.describe(
        cron="When: 5 cron fields, minute hour day month weekday (0 9 * * 1-5 = weekdays at 09:00)",
        timezone="The time zone of those times, e.g. Europe/Paris or UTC",
        prompt="What the persona is asked at each run",
        persona="The persona that answers (default: this channel's)",
    )
    @schedule_admin
    async def add(
        self,
        interaction: Interaction,
        cron: app_commands.Range[str, 1, 100],
        timezone: app_commands.Range[str, 1, 64],
        prompt: app_commands.Range[str, 1, MAX_PROMPT],
        persona: str | None = None,
    ) -> None:
        scope = command_scope(interaction)
        if scope is None:
            await say(interaction, OUTSIDE_SERVER)
            return
        guild, channel = scope
        core = interaction.client.core
        if persona and await core.personas.get(persona) is None:
            await say(interaction, f"There is no persona named '{persona}'. `/persona list` shows them.")
            return
        try:
            schedule = await core.schedules.add(
                PLATFORM,
                guild,
                channel,
                cron=cron,
                timezone=canonical_zone(timezone),
                prompt=prompt,
                persona_name=persona or None,
                created_by=str(interaction.user.id),
            )
        except ScheduleInvalid as exc:
            await say(interaction, f"❌ {exc}")
            return
        lines = [
            f"⏰ Scheduled {schedule.describe(datetime.now(UTC))}",
            f"Each run posts the prompt in <#{channel}> and the answer in a thread under it. "
            f"`/schedule remove id:{schedule.id}` stops it.",
        ]
        await say(interaction, "\n".join(lines))

    @app_commands.command(name="list", description="The schedules of this channel")
    async def list_schedules(self, interaction: Interaction) -> None:
        scope = command_scope(interaction)
        if scope is None:
            await say(interaction, OUTSIDE_SERVER)
            return
        guild, channel = scope
        schedules = await interaction.client.core.schedules.in_scope(PLATFORM, guild, channel)
        if not schedules:
            await say(interaction, f"No schedules in <#{channel}>. Add one with `/schedule add`.")
            return
        now = datetime.now(UTC)
        head = f"**Schedules of <#{channel}>**"
        room = (MAX_REPLY - len(head)) // len(schedules) - 3  # every line fits, prompts shortened if needed
        lines = [head, *(f"• {clip(schedule.describe(now), room)}" for schedule in schedules)]
        await say(interaction, "\n".join(lines))

    @app_commands.command(name="remove", description="Stop one of this channel's schedules")
    @app_commands.describe(schedule_id="The schedule's number (see /schedule list)")
    @app_commands.rename(schedule_id="id")
    @schedule_admin
    async def remove(self, interaction: Interaction, schedule_id: app_commands.Range[int, 1]) -> None:
        scope = command_scope(interaction)
        if scope is None:
            await say(interaction, OUTSIDE_SERVER)
            return
        guild, channel = scope
        schedules = interaction.client.core.schedules
        schedule = await schedules.get(schedule_id)
        if schedule is None or schedule.platform != PLATFORM or schedule.workspace != guild:
            await say(interaction, f"There is no schedule #{schedule_id} here. `/schedule list` shows them.")
            return
        if schedule.channel != channel:
            await say(
                interaction,
                f"Schedule #{schedule_id} belongs to <#{schedule.channel}>: run `/schedule remove` there.",
            )
            return
        if not await schedules.remove(PLATFORM, guild, schedule_id):
            await say(interaction, f"There is no schedule #{schedule_id} here. `/schedule list` shows them.")
            return
        await say(interaction, f"🗑️ Removed schedule #{schedule_id}: {clip(schedule.prompt, 200)}")

    @add.autocomplete("timezone")
    async def timezones(self, _interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=zone, value=zone) for zone in timezone_choices(current)]

    @add.autocomplete("persona")
    async def personas(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await persona_choices(interaction, current)

    @remove.autocomplete("schedule_id")
    async def schedule_ids(
        self, interaction: Interaction, current: str | int
    ) -> list[app_commands.Choice[int]]:
        scope = command_scope(interaction)
        if scope is None:
            return []
        guild, channel = scope
        now = datetime.now(UTC)
        found = await interaction.client.core.schedules.in_scope(PLATFORM, guild, channel)
        return [
            app_commands.Choice(name=clip(schedule.describe(now), CHOICE_NAME_MAX), value=schedule.id)
            for schedule in found
            if str(current).strip().lstrip("#") in str(schedule.id)
        ][:CHOICES_MAX]
