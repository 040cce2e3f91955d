"""`threadline doctor` for Discord: the token works, what the bot can do, the invite link."""

from __future__ import annotations

import aiohttp
import discord

from bots.discord.client import logged_in
from bots.discord.invite import invite_url
from core.config import Settings


async def check_discord(settings: Settings) -> tuple[bool, str]:
    """Log in over REST (no gateway) and describe the bot; never shows the token."""
    try:
        async with logged_in(settings) as client:
            user, application_id = client.user, client.application_id
    except discord.LoginFailure:
        return False, "DISCORD_TOKEN was refused by Discord (reset it in the developer portal)"
    except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
        return False, f"cannot reach Discord at {settings.discord_api_url} ({type(exc).__name__})"
    follow_ups = (
        "thread follow-ups without mention (needs 'Message Content Intent' in the portal)"
        if settings.discord_message_content
        else "follow-ups in threads need a mention (THREADLINE_DISCORD_MESSAGE_CONTENT is off)"
    )
    invite = invite_url(application_id) if application_id is not None else "unknown application id"
    return True, f"logged in as {user}; {follow_ups}; invite: {invite}"
