"""A running Threadline Slack bot against the fake Slack and the fake OpenAI endpoint.

    async with SlackHarness.running(tmp_path, llm=fake_openai, mode="http") as slack:
        said = await slack.say("<@UBOT> hello")            # message + app_mention, like Slack
        assert await slack.wait_for_final_text(said.ts) == "Echo: Alice Liddell: hello"

Everything is real except the two remote services: Core on a SQLite file, bolt's AsyncApp, the
aiohttp server on 127.0.0.1 (HTTP mode) or the Socket Mode websocket client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import pytest_asyncio
from aiohttp import web

from bots.slack.adapter import SlackAdapter
from core.app import Core
from core.config import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import Delivery, FakeSlack, Message

Mode = Literal["http", "socket"]
SETTLE_TIMEOUT = 10.0


@dataclass
class Said:
    """A message a person posted, and the events Slack delivered for it."""

    event: dict[str, Any]
    event_ids: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def ts(self) -> str:
        return str(self.event["ts"])

    @property
    def channel(self) -> str:
        return str(self.event["channel"])

    @property
    def thread(self) -> str:
        """The thread a reply to this message lives in."""
        return str(self.event.get("thread_ts") or self.event["ts"])


class SlackHarness:
    def __init__(
        self, *, fake: FakeSlack, llm: FakeOpenAI, database_url: str, mode: Mode, **settings: Any
    ) -> None:
        self.fake = fake
        self.llm = llm
        self.database_url = database_url
        self.mode: Mode = mode
        self._settings = settings
        self.core: Core | None = None
        self.adapter: SlackAdapter | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        tmp_path: Path,
        *,
        llm: FakeOpenAI,
        mode: Mode = "http",
        fake: FakeSlack | None = None,
        **settings: Any,
    ) -> AsyncIterator[SlackHarness]:
        async with FakeSlack() if fake is None else _started(fake) as slack:
            harness = cls(
                fake=slack,
                llm=llm,
                database_url=f"sqlite:///{tmp_path / 'threadline.db'}",
                mode=mode,
                **settings,
            )
            await harness.start()
            try:
                yield harness
            finally:
                await harness.stop()

    def settings(self) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "openai_base_url": self.llm.base_url,
            "openai_api_key": "sk-test",
            "slack_bot_token": self.fake.bot_token,
            "slack_signing_secret": self.fake.signing_secret,
            "slack_app_token": self.fake.app_token if self.mode == "socket" else None,
            "slack_api_url": self.fake.api_url,
            "slack_edit_interval": 0.02,
            "llm_max_attempts": 2,
            "host": "127.0.0.1",
            "port": 0,
        }
        values.update(self._settings)
        return Settings(**values)

    async def start(self) -> None:
        self.fake.mode = self.mode
        self.core = await Core.open(self.settings())
        http = web.Application()
        self.adapter = SlackAdapter(self.core, http)
        self._runner = web.AppRunner(http, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.fake.events_url = f"http://127.0.0.1:{self.port}/slack/events"
        await self.adapter.start()

    async def stop(self) -> None:
        if self.adapter is not None:
            await self.adapter.stop()
            self.adapter = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.core is not None:
            await self.core.aclose()
            self.core = None

    async def restart(self) -> None:
        """Stop everything and start again on the same database (a process restart)."""
        await self.stop()
        await self.start()

    # -- people ----------------------------------------------------------------------------------

    async def say(
        self,
        text: str,
        *,
        channel: str = "C0001",
        user: str = "U0001",
        thread_ts: str | None = None,
        channel_type: str = "channel",
        settle: bool = True,
    ) -> Said:
        """A person posts: Slack delivers `message` (and `app_mention` when the bot is mentioned)."""
        fake = self.fake
        event = fake.message_event(
            text, channel=channel, user=user, thread_ts=thread_ts, channel_type=channel_type
        )
        said = Said(event)
        kinds = [event]
        if f"<@{fake.bot_user_id}>" in text and channel_type != "im":
            kinds = [fake.mention_event(event), event]
        for payload in kinds:
            event_id = fake.new_event_id()
            said.event_ids.append(event_id)
            said.deliveries.append(await fake.deliver_event(payload, event_id=event_id))
        if settle:
            await self.settle(said)
        return said

    async def redeliver(self, said: Said, *, retry_num: int, index: int = -1) -> Delivery:
        """Slack's retry of one of the events of `said` (same event id, retry markers set)."""
        # say() delivers app_mention first (when the bot is mentioned), then the message event.
        mention_first = len(said.event_ids) == 2
        is_mention = mention_first and index % 2 == 0
        payload = self.fake.mention_event(said.event) if is_mention else said.event
        event_id = said.event_ids[index]
        delivery = await self.fake.deliver_event(payload, event_id=event_id, retry_num=retry_num)
        said.deliveries.append(delivery)
        return delivery

    async def settle(self, said: Said, *, deliveries: dict[str, int] | None = None) -> list[str]:
        """Wait until every delivered event of `said` was handled (replies fully streamed)."""
        assert self.adapter is not None
        counts = deliveries or {event_id: 1 for event_id in said.event_ids}
        outcomes: list[str] = []
        async with asyncio.timeout(SETTLE_TIMEOUT):
            for event_id, count in counts.items():
                outcomes.extend(await self.adapter.wait_for_outcomes(event_id, count))
        return outcomes

    # -- what people see -------------------------------------------------------------------------

    def bot_messages(self, channel: str, thread_ts: str | None) -> list[Message]:
        fake = self.fake
        found = fake.thread(channel, thread_ts) if thread_ts is not None else fake.top_level(channel)
        return [m for m in found if m.user == fake.bot_user_id and not m.deleted]

    def texts(self, channel: str = "C0001", thread_ts: str | None = None) -> list[str]:
        return [m.text for m in self.bot_messages(channel, thread_ts)]

    async def wait_for_final_text(self, thread_ts: str | None, *, channel: str = "C0001") -> str:
        """The reply in a thread once nothing is in flight: every part's text joined by newlines."""
        adapter = self.adapter
        assert adapter is not None
        async with asyncio.timeout(SETTLE_TIMEOUT):
            await self.fake.wait_until(
                lambda: bool(self.bot_messages(channel, thread_ts)), limit=SETTLE_TIMEOUT
            )
            await adapter.wait_idle()
        return "\n".join(self.texts(channel, thread_ts))

    def llm_requests(self) -> Sequence[dict[str, Any]]:
        return self.llm.requests


@asynccontextmanager
async def _started(fake: FakeSlack) -> AsyncIterator[FakeSlack]:
    if not fake.port:
        await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
def llm(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The fake model, under the name the Slack tests use."""
    return fake_openai


@pytest_asyncio.fixture
async def slack(tmp_path: Path, llm: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    """A started Slack adapter (HTTP mode) against a fresh fake Slack; files can override it."""
    async with SlackHarness.running(tmp_path, llm=llm) as harness:
        yield harness
