"""What the scheduler needs from each platform adapter, beyond answering events."""

from __future__ import annotations

from typing import Protocol

from core.surface import Surface
from core.types import ConversationKey


class PlatformPort(Protocol):
    name: str

    def surface_for(self, key: ConversationKey) -> Surface:
        """A surface that posts into the conversation's thread and edits its messages."""
        ...

    async def open_thread(self, workspace: str, channel: str, header: str) -> tuple[ConversationKey, Surface]:
        """Post `header` as a new top-level message and return the thread it starts (scheduled prompts)."""
        ...
