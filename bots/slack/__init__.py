"""The Slack adapter: mentions, threads and DMs as conversations; `/persona`; Socket Mode or HTTP.

`from bots.slack import SlackAdapter` (imported lazily, so the small modules here load without the core).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bots.slack.adapter import SlackAdapter

__all__ = ["SlackAdapter"]


def __getattr__(name: str) -> Any:
    if name == "SlackAdapter":
        from bots.slack.adapter import SlackAdapter

        return SlackAdapter
    raise AttributeError(name)
