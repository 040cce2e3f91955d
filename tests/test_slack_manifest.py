"""The app manifest asks for exactly what the adapter uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.config import Settings

MANIFEST = Path(__file__).parent.parent / "bots" / "slack" / "manifest.yaml"


def _manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_scopes_are_exactly_the_needed_ones() -> None:
    scopes = _manifest()["oauth_config"]["scopes"]["bot"]
    assert sorted(scopes) == sorted(
        [
            "app_mentions:read",
            "channels:history",
            "groups:history",
            "im:history",
            "mpim:history",
            "chat:write",
            "commands",
            "users:read",
        ]
    )


def test_events_command_and_interactivity() -> None:
    manifest = _manifest()
    settings = manifest["settings"]
    assert sorted(settings["event_subscriptions"]["bot_events"]) == [
        "app_mention",
        "message.channels",
        "message.groups",
        "message.im",
        "message.mpim",
    ]
    assert settings["interactivity"]["is_enabled"] is True
    assert "socket_mode_enabled" in settings
    commands = [command["command"] for command in manifest["features"]["slash_commands"]]
    assert commands == [
        Settings.model_fields[name].default
        for name in ("slack_persona_command", "slack_usage_command", "slack_schedule_command")
    ]
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert len(manifest["display_information"]["name"]) <= 35
