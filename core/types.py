"""Small value types shared by the core and the adapters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a conversation lives: (platform, workspace, channel, thread).

    `thread` is the platform's thread id (Slack `thread_ts`, Discord thread channel id); a terminal
    chat uses its own stable ids. `workspace` is a Slack team id or a Discord guild id ("" for DMs
    where the platform has none).
    """

    platform: str
    workspace: str
    channel: str
    thread: str

    def describe(self) -> str:
        return f"{self.platform}:{self.workspace}/{self.channel}/{self.thread}"


@dataclass(frozen=True, slots=True)
class Author:
    """The person (or bot) who wrote a message, as the model should see them."""

    id: str
    name: str
