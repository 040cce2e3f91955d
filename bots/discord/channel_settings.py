"""`/settings`: how the bot behaves in this channel (a thread follows its parent channel).

With no option it shows the current values (anyone); with options it changes them (Manage Channels
or THREADLINE_ADMINS). Answers are ephemeral.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bots.discord.permissions import SETTINGS_REFUSAL, may_manage
from bots.discord.replies import say
from bots.discord.routing import PLATFORM, command_scope
from core.channels import ChannelSettings

if TYPE_CHECKING:
    from bots.discord.client import ThreadlineClient

OUTSIDE_SERVER = "Settings belong to a server's channels: run `/settings` in one."
NEEDS_INTENT = (
    " (needs the message-content intent, which is off here: in threads, mention the bot to continue)"
)


def describe_settings(settings: ChannelSettings, *, message_content: bool) -> list[str]:
    """One line per setting: its name as the command spells it, its value, and what that means."""

    def line(name: str, value: bool, on: str, off: str) -> str:
        return f"• `{name}`: **{'on' if value else 'off'}** — {on if value else off}"

    follow_ups = "messages in the bot's threads are answered without a mention"
    if not message_content:
        follow_ups += NEEDS_INTENT
    return [
        line(
            "reply_in_thread",
            settings.reply_in_thread,
            "a mention in the channel is answered in a new thread",
            "a mention in the channel is answered inline, in the channel",
        ),
        line(
            "follow_up_in_threads",
            settings.follow_up_in_threads,
            follow_ups,
            "in threads, only messages that mention the bot are answered",
        ),
        line("allow_bots", settings.allow_bots, "other bots are answered too", "other bots are ignored"),
    ]


async def run_settings(
    interaction: discord.Interaction[ThreadlineClient],
    *,
    reply_in_thread: bool | None,
    follow_up_in_threads: bool | None,
    allow_bots: bool | None,
) -> None:
    scope = command_scope(interaction)
    if scope is None:
        await say(interaction, OUTSIDE_SERVER)
        return
    guild, channel = scope
    channels = interaction.client.core.channels
    changes = {
        name: value
        for name, value in (
            ("reply_in_thread", reply_in_thread),
            ("follow_up_in_threads", follow_up_in_threads),
            ("allow_bots", allow_bots),
        )
        if value is not None
    }
    if changes:
        if not may_manage(interaction):
            await say(interaction, SETTINGS_REFUSAL)
            return
        current = await channels.update(PLATFORM, guild, channel, **changes)
        head = f"✅ Saved. Settings of <#{channel}>:"
        tail = []
    else:
        current = await channels.get(PLATFORM, guild, channel)
        head = f"**Settings of <#{channel}>**"
        tail = ["Change one with e.g. `/settings reply_in_thread:False` (needs Manage Channels)."]
    lines = describe_settings(current, message_content=interaction.client.settings.discord_message_content)
    await say(interaction, "\n".join([head, *lines, *tail]))
