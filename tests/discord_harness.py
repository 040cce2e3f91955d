"""End-to-end harness: fake Discord + fake OpenAI + the real core on a temporary SQLite + the adapter.

async with discord_world(tmp_path, monkeypatch) as world:
    interaction = await world.command(world.channel, world.alice, "chat", prompt="Hi")
    results = await world.turns(1)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl
from sqlalchemy import select

from bots.discord.adapter import DiscordAdapter
from core.app import Core
from core.config import Settings
from core.engine import Engine, Turn, TurnResult
from core.storage.models import MessageRow
from tests.fakes.discord_payloads import MANAGE_CHANNELS, MEMBER_PERMISSIONS, FakeChannel, FakeGuild, FakeUser
from tests.fakes.discord_server import EPHEMERAL, FakeDiscord, FakeInteraction
from tests.fakes.openai_server import FakeOpenAI, clear_proxy_env

MODERATOR = MEMBER_PERMISSIONS | MANAGE_CHANNELS
OPTION_TYPES = {str: 3, int: 4, bool: 5, float: 10}


def options(**values: Any) -> list[dict[str, Any]]:
    return [
        {"name": name, "type": OPTION_TYPES[type(value)], "value": value}
        for name, value in values.items()
        if value is not None
    ]


def subcommand(sub: str, /, **values: Any) -> list[dict[str, Any]]:
    """Options of `/command sub ...`, or of `/command group sub ...` when `sub` is "group sub"."""
    group, _, leaf = sub.rpartition(" ")
    inner = [{"name": leaf, "type": 1, "options": options(**values)}]
    return [{"name": group, "type": 2, "options": inner}] if group else inner


@dataclass
class DiscordWorld:
    discord: FakeDiscord
    llm: FakeOpenAI
    core: Core
    adapter: DiscordAdapter
    guild: FakeGuild
    channel: FakeChannel
    other_channel: FakeChannel
    alice: FakeUser
    bob: FakeUser
    results: list[TurnResult] = field(default_factory=list)
    turns_started: list[Turn] = field(default_factory=list)  # every Turn handed to the engine
    _done: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def command(
        self,
        channel: FakeChannel,
        user: FakeUser,
        command: str,
        /,
        *,
        permissions: int = MEMBER_PERMISSIONS,
        sub: str | None = None,
        **values: Any,
    ) -> FakeInteraction:
        """Run `/command [group] [sub] option:value...` and wait for the bot's first answer to it."""
        opts = subcommand(sub, **values) if sub else options(**values)
        interaction = await self.discord.run_command(channel, user, command, opts, permissions=permissions)
        return await self.discord.wait_response(interaction)

    async def turns(self, count: int, within: float = 10.0) -> list[TurnResult]:
        """Wait until `count` turns in total have finished; returns all results so far."""

        async def _wait() -> list[TurnResult]:
            async with self._done:
                await self._done.wait_for(lambda: len(self.results) >= count)
                return list(self.results)

        return await asyncio.wait_for(_wait(), within)

    async def answer(self, interaction: FakeInteraction, within: float = 5.0) -> str:
        """The text of the bot's ephemeral answer, also when it deferred ("thinking…") first."""
        await self.discord.wait_response(interaction, within)
        if interaction.responded == 4:
            data = interaction.response_data or {}
            assert data.get("flags") == EPHEMERAL, data
            return str(data["content"])
        assert interaction.responded == 5, interaction.responded
        message = await self.discord.wait_for(
            lambda: (m := self.discord.original(interaction)).content and m, within
        )
        assert message.ephemeral, message.flags
        return str(message.content)

    async def rows(self) -> list[MessageRow]:
        async with self.core.db.session() as session:
            return list((await session.scalars(select(MessageRow).order_by(MessageRow.id))).all())


def isolate_discord_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy for loopback, and discord.py's endpoints (class attributes a fake server points at
    itself) restored after the test."""
    clear_proxy_env(monkeypatch)
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket,
        "DEFAULT_GATEWAY",
        yarl.URL(str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)),
    )


def settings_for(tmp_path: Path, fake: FakeDiscord, llm: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'threadline.db'}",
        "openai_api_key": "sk-test",
        "openai_base_url": llm.base_url,
        "discord_token": fake.token,
        "discord_api_url": fake.api_url,
        "discord_gateway_url": fake.gateway_url,
        "discord_message_content": True,
        "discord_edit_interval": 0.05,
        "llm_max_attempts": 1,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def discord_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> AsyncIterator[DiscordWorld]:
    isolate_discord_endpoints(monkeypatch)
    fake = FakeDiscord()
    await fake.start()
    guild = fake.add_guild("Threadline Test")
    channel = fake.add_channel(guild, "general")
    other = fake.add_channel(guild, "random")
    llm = FakeOpenAI()
    await llm.start()
    core = await Core.open(settings_for(tmp_path, fake, llm, **settings))
    adapter = DiscordAdapter(core, None, ready_timeout=5.0, client_options={"guild_ready_timeout": 0.05})
    world = DiscordWorld(
        fake, llm, core, adapter, guild, channel, other, fake.user("Alice"), fake.user("Bob")
    )

    original = Engine.handle_turn

    async def observed(engine: Engine, turn: Turn, surface: Any) -> TurnResult:
        world.turns_started.append(turn)
        result = await original(engine, turn, surface)
        async with world._done:
            world.results.append(result)
            world._done.notify_all()
        return result

    monkeypatch.setattr(Engine, "handle_turn", observed)
    try:
        await adapter.start()
        assert adapter.ready()
        yield world
    finally:
        await adapter.stop()
        await core.aclose()
        await llm.stop()
        await fake.close()
