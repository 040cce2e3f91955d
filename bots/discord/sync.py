"""Publishing the slash commands only when they changed.

Instead of remembering a hash in a local file (lost with every container, wrong with several
replicas), the bot reads what Discord has registered (one GET) and compares a digest of the parts
that matter with the digest of its own command tree; it writes (one PUT) only when they differ. With
THREADLINE_DISCORD_DEV_GUILD_ID the commands go to that guild only, where changes show instantly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import discord
from discord import app_commands

from bots.discord.client import logged_in
from core.config import Settings

log = logging.getLogger("threadline.discord.sync")

_KEYS = (
    "name",
    "description",
    "type",
    "options",
    "required",
    "choices",
    "value",
    "autocomplete",
    "min_value",
    "max_value",
    "min_length",
    "max_length",
    "channel_types",
    "default_member_permissions",
    "nsfw",
    "contexts",
    "integration_types",
)


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {key: _normalise(value[key]) for key in _KEYS if key in value}
        return {key: item for key, item in kept.items() if item not in (None, False, [], "")}
    if isinstance(value, list):
        items = [_normalise(item) for item in value]
        return sorted(items) if all(isinstance(item, int) for item in items) else items
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return str(value) if not isinstance(value, bool) else value


def digest(commands: list[dict[str, Any]]) -> str:
    """A digest of what users see of a command list, equal for local and registered payloads."""
    normalised = []
    for command in commands:
        item = _normalise(command)
        item.setdefault("type", 1)
        if "default_member_permissions" in item:
            item["default_member_permissions"] = str(item["default_member_permissions"])
        normalised.append(item)
    normalised.sort(key=lambda item: (str(item.get("name")), int(item.get("type", 1))))
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()


def local_payload(
    tree: app_commands.CommandTree[Any], guild: discord.abc.Snowflake | None
) -> list[dict[str, Any]]:
    return [command.to_dict(tree) for command in tree.get_commands(guild=guild)]


async def _registered(
    tree: app_commands.CommandTree[Any], guild: discord.abc.Snowflake | None
) -> list[dict[str, Any]]:
    http = tree.client.http
    application_id = tree.client.application_id
    if application_id is None:
        raise app_commands.MissingApplicationID()
    if guild is None:
        return list(await http.get_global_commands(application_id))
    return list(await http.get_guild_commands(application_id, guild.id))


async def sync_if_changed(
    tree: app_commands.CommandTree[Any], dev_guild_id: int | None, *, force: bool = False
) -> str:
    """Publish the tree (globally, or to the dev guild) unless Discord already has the same commands."""
    guild = discord.Object(id=dev_guild_id) if dev_guild_id else None
    if guild is not None:
        tree.clear_commands(guild=guild)
        tree.copy_global_to(guild=guild)
    where = f"guild {dev_guild_id}" if guild else "all servers (global; may take a while to appear)"
    local = local_payload(tree, guild)
    if not force and digest(local) == digest(await _registered(tree, guild)):
        return f"{len(local)} commands unchanged in {where}; nothing published"
    synced = await tree.sync(guild=guild)
    return f"published {len(synced)} commands to {where}"


async def sync_commands(settings: Settings, guild_id: int | None, *, force: bool = True) -> str:
    """`threadline discord sync [--guild ID]`: log in over REST only, publish, log out."""
    async with logged_in(settings) as client:
        return await sync_if_changed(client.tree, guild_id, force=force)
