"""Discord API objects as the fake Discord serves them (only the fields discord.py reads)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (https://discord.com/developers/docs/topics/permissions)
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
MANAGE_CHANNELS = 1 << 4
ADMINISTRATOR = 1 << 3
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
USE_APPLICATION_COMMANDS = 1 << 31
MEMBER_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | READ_MESSAGE_HISTORY
    | EMBED_LINKS
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)
BOT_PERMISSIONS = MEMBER_PERMISSIONS

_counter = itertools.count(1)


def snowflake() -> int:
    """A fresh id whose timestamp is now (discord.py derives `created_at` from it)."""
    now_ms = int(time.time() * 1000)
    return ((now_ms - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    def member_payload(self, permissions: int | None = None, nick: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user": self.payload(),
            "roles": [],
            "joined_at": iso_now(),
            "nick": nick,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class FakeChannel:
    id: int
    guild_id: int
    name: str
    type: int = 0  # 0 text, 11 public thread
    parent_id: int | None = None
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    auto_archive_duration: int = 1440

    @property
    def is_thread(self) -> bool:
        return self.type in (10, 11, 12)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "guild_id": str(self.guild_id),
            "name": self.name,
            "type": self.type,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "parent_id": str(self.parent_id) if self.parent_id else None,
        }
        if self.is_thread:
            data.update(
                owner_id=str(self.owner_id),
                message_count=0,
                member_count=1,
                thread_metadata={
                    "archived": self.archived,
                    "locked": self.locked,
                    "auto_archive_duration": self.auto_archive_duration,
                    "archive_timestamp": iso_now(),
                },
            )
        return data


@dataclass
class FakeGuild:
    id: int
    name: str
    everyone_permissions: int = MEMBER_PERMISSIONS
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)

    def role_payloads(self) -> list[dict[str, Any]]:
        roles = [_role(self.id, "@everyone", self.everyone_permissions)]
        roles += [_role(role_id, name, 0) for role_id, name in self.roles.items()]
        return roles

    def payload(self, bot: FakeUser) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "unavailable": False,
            "member_count": 2,
            "owner_id": "1",
            "roles": self.role_payloads(),
            "channels": [c.payload() for c in self.channels.values() if not c.is_thread],
            "threads": [c.payload() for c in self.channels.values() if c.is_thread],
            "members": [bot.member_payload()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
        }


def _role(role_id: int, name: str, permissions: int) -> dict[str, Any]:
    return {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "hoist": False,
        "position": 0,
        "permissions": str(permissions),
        "managed": False,
        "mentionable": True,
        "flags": 0,
    }


@dataclass
class FakeMessage:
    """A message as the fake stores it; `content` is what a person sees now."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str
    flags: int = 0
    webhook_id: int | None = None
    interaction_id: int | None = None
    mentions: list[FakeUser] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    allowed_mentions: Any = None  # what the last write carried
    history: list[str] = field(default_factory=list)  # every content it ever had, oldest first
    deleted: bool = False
    components: list[Any] = field(default_factory=list)
    reference: int | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": [str(r) for r in self.mention_roles],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 19 if self.reference else (20 if self.interaction_id else 0),
            "flags": self.flags,
            "components": self.components,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.reference is not None:
            data["message_reference"] = {
                "message_id": str(self.reference),
                "channel_id": str(self.channel_id),
            }
        return data
