"""SlackAdapter: Slack events → core turns, over Socket Mode or the HTTP Events API.

- Socket Mode when SLACK_APP_TOKEN is set; otherwise `POST /slack/events` on the service's aiohttp
  server, every request's signature verified (401 and no work when it is missing, wrong or older
  than 5 minutes). Message and mention events, once verified, are acknowledged by the adapter itself;
  everything else (commands, modals, URL verification, bad signatures) goes through bolt.
- Every event is acknowledged at once; the work runs in a tracked background task
  (`stop_receiving()` takes no new events; `stop()` waits for running replies up to
  THREADLINE_SHUTDOWN_GRACE, then cancels what is left).
- Each Slack message is answered at most once: its (channel, ts) and its `event_id` are claimed in
  the database (one transaction) before anything is posted, so Slack's retries, redeliveries after a
  restart, and the `app_mention` + `message` pair of one mention produce a single reply (also across
  replicas sharing a PostgreSQL database).
- What became of each event is counted in `threadline_slack_events_total{outcome}` (answered, reset,
  duplicate, ignored, failed).
- For the scheduler: `surface_for(key)` (finalise a reply a crash left streaming) and
  `open_thread()` (a scheduled prompt starts a new thread under a top-level message).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import Counter
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.commands import PersonaCommands
from bots.slack.events import DM_THREAD, PLATFORM, Incoming, is_reset_request, parse_event
from bots.slack.modals import CALLBACK_ID
from bots.slack.mrkdwn import from_slack, mentioned_users
from bots.slack.operations import ScheduleCommands, UsageCommand
from bots.slack.surface import SlackSurface
from bots.slack.users import UserDirectory
from core.app import Core
from core.config import ConfigError
from core.engine import Turn
from core.types import Author, ConversationKey

log = logging.getLogger("threadline.slack")

EVENTS_PATH = "/slack/events"
MESSAGE_EVENTS = ("app_mention", "message")
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
OUTCOMES_KEPT = 1000
RESET_DONE = "🧹 Done: I forgot this thread's history. The next message starts a fresh conversation."
RESET_NOTHING = "There was nothing to forget in this thread."

EVENTS = Counter("threadline_slack_events", "Slack events by what became of them", ["outcome"])
# When the HTTP request carrying an event reached the adapter (bolt runs the listener in a task
# created inside the request, which inherits this). Unset in Socket Mode: the listener's start is used.
_RECEIVED_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("received_at", default=None)


class _NoTokenNotice(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment by itself and then warns at every start that
    the client we give it wins. That is intended here: drop the warning, keep the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("threadline.slack.bolt")
    if not any(isinstance(existing, _NoTokenNotice) for existing in logger.filters):
        logger.addFilter(_NoTokenNotice())
    return logger


def api_base_url(url: str) -> str:
    """slack_sdk joins method names onto the base URL: it must end with a slash."""
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True, slots=True)
class Identity:
    team_id: str
    user_id: str
    bot_id: str | None


class _Tasks:
    """Background tasks the adapter owns, so stop() can wait for them and cancel the rest."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("slack task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self, grace: float) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)


class SlackAdapter:
    name = "slack"

    def __init__(self, core: Core, http: web.Application) -> None:
        settings = core.settings
        if not settings.slack_bot_token:
            raise ConfigError("SLACK_BOT_TOKEN: required for the Slack adapter")
        self._socket_mode = bool(settings.slack_app_token)
        if not self._socket_mode and not settings.slack_signing_secret:
            raise ConfigError(
                "SLACK_SIGNING_SECRET: required for the HTTP Events API "
                "(or set SLACK_APP_TOKEN for Socket Mode)"
            )
        self._core = core
        self._client = AsyncWebClient(
            token=settings.slack_bot_token, base_url=api_base_url(settings.slack_api_url)
        )
        self._app = AsyncApp(
            client=self._client,
            signing_secret=settings.slack_signing_secret or "",
            request_verification_enabled=not self._socket_mode,
            name="threadline",
            logger=_bolt_logger(),
        )
        self._verifier = None if self._socket_mode else SignatureVerifier(settings.slack_signing_secret or "")
        self._users = UserDirectory(self._client)
        self._commands = PersonaCommands(core, self._users)
        self._usage = UsageCommand(core)
        self._schedules = ScheduleCommands(core, self._users)
        self._tasks = _Tasks()
        self._identity: Identity | None = None
        self._identity_lock = asyncio.Lock()
        self._handler: AsyncSocketModeHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        self._running = False
        self._stopping = False
        # What became of recent events, by event id (for diagnostics and tests).
        self.outcomes: OrderedDict[str, list[str]] = OrderedDict()
        self._outcome_changed = asyncio.Event()

        for event_type in MESSAGE_EVENTS:
            self._app.event(event_type)(self._on_event)
        self._app.command(self._commands.command)(self._commands.on_command)
        self._app.command(self._usage.command)(self._usage.on_command)
        self._app.command(self._schedules.command)(self._schedules.on_command)
        self._app.view(CALLBACK_ID)(self._commands.on_view_submission)
        if not self._socket_mode:
            http.router.add_post(EVENTS_PATH, self._on_http)

    @property
    def socket_mode(self) -> bool:
        return self._socket_mode

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._client.session = self._session
        identity = await self.identity()  # fails fast on a bad bot token
        if self._socket_mode:
            handler = AsyncSocketModeHandler(
                self._app, app_token=self._core.settings.slack_app_token, web_client=self._client
            )
            # Ask for the websocket URL once here, so a bad app token stops start() with Slack's error
            # instead of the client's endless reconnect loop.
            handler.client.wss_uri = await handler.client.issue_new_wss_url()
            await handler.connect_async()  # type: ignore[no-untyped-call]
            self._handler = handler
        self._running = True
        self._stopping = False
        mode = "Socket Mode" if self._socket_mode else f"HTTP Events API at {EVENTS_PATH}"
        log.info("Slack connected to team %s as %s (%s)", identity.team_id, identity.user_id, mode)

    async def stop_receiving(self) -> None:
        """Take no new events (Socket Mode: disconnect; HTTP: 503 so Slack retries elsewhere).

        Replies in flight keep posting and editing: the Web API client stays open until stop().
        """
        self._running = False
        self._stopping = True
        if self._handler is not None:
            await self._handler.close_async()  # type: ignore[no-untyped-call]
            self._handler = None

    async def stop(self) -> None:
        """Stop receiving, let work in flight finish (at most the shutdown grace), close the client."""
        await self.stop_receiving()
        await self._tasks.close(self._core.settings.shutdown_grace)
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._client.session = None

    @property
    def in_flight(self) -> int:
        """Events being worked on (replies streaming) right now."""
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Wait until no event is being worked on."""
        await self._tasks.wait_idle()

    def ready(self) -> bool:
        if not self._running:
            return False
        if self._handler is None:
            return True
        session = self._handler.client.current_session
        return session is not None and not session.closed and not self._handler.client.closed

    # -- scheduler port ----------------------------------------------------------------------------

    def _surface(self, team: str, channel: str, thread_ts: str | None) -> SlackSurface:
        return SlackSurface(
            self._client,
            team=team,
            channel=channel,
            thread_ts=thread_ts,
            edit_interval=self._core.settings.slack_edit_interval,
        )

    def surface_for(self, key: ConversationKey) -> SlackSurface:
        """The conversation's thread (the top level of a DM for its `dm` conversation)."""
        return self._surface(key.workspace, key.channel, None if key.thread == DM_THREAD else key.thread)

    async def open_thread(
        self, workspace: str, channel: str, header: str
    ) -> tuple[ConversationKey, SlackSurface]:
        """Post `header` (Markdown) at the top level of `channel`; the thread under it is the conversation."""
        top = self._surface(workspace, channel, None)
        ts = await top.post(top.render(header))
        return ConversationKey(PLATFORM, workspace, channel, ts), self._surface(workspace, channel, ts)

    async def identity(self) -> Identity:
        async with self._identity_lock:
            if self._identity is None:
                try:
                    auth = await self._client.auth_test()
                except SlackApiError as exc:
                    raise ConfigError(
                        f"SLACK_BOT_TOKEN: Slack refused it ({exc.response.get('error')})"
                    ) from None
                self._identity = Identity(
                    team_id=str(auth.get("team_id") or ""),
                    user_id=str(auth.get("user_id") or ""),
                    bot_id=str(auth["bot_id"]) if auth.get("bot_id") else None,
                )
            return self._identity

    # -- inbound ---------------------------------------------------------------------------------

    async def _on_http(self, request: web.Request) -> web.Response:
        if self._stopping:  # not acknowledged: Slack retries, e.g. on another replica
            return web.Response(status=503, text="shutting down")
        received = time.monotonic()
        message = self._signed_message_event(await request.read(), request.headers)
        if message is not None:
            self._accept(message, received)
            return web.Response(status=200)
        _RECEIVED_AT.set(received)
        response = await self._app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    def _signed_message_event(self, raw: bytes, headers: Mapping[str, str]) -> dict[str, Any] | None:
        """A correctly signed `message` / `app_mention` event callback, or None.

        These are acknowledged here, without bolt's dispatch (about a millisecond before the reply
        could start); every other request, and every badly signed one, goes through bolt.
        """
        if self._verifier is None:
            return None
        try:
            if not self._verifier.is_valid(raw, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)):
                return None
            body = json.loads(raw)
        except ValueError:  # not a number as timestamp, or not JSON (commands, interactions)
            return None
        if not isinstance(body, dict) or body.get("type") != "event_callback":
            return None
        event = body.get("event")
        if not isinstance(event, dict) or event.get("type") not in MESSAGE_EVENTS:
            return None
        return body

    async def _on_event(self, body: dict[str, Any]) -> None:
        # Bolt has acknowledged already (Socket Mode, or an event the HTTP fast path left to bolt).
        self._accept(body, _RECEIVED_AT.get() or time.monotonic())

    def _accept(self, body: dict[str, Any], received: float) -> None:
        """The work on an acknowledged event happens in a task stop() can wait for."""
        if self._stopping:
            return
        me = self._identity
        if me is not None and parse_event(body, bot_user_id=me.user_id, bot_id=me.bot_id) is None:
            # Most deliveries are the bot's own posts and edits echoed back: settled without a task.
            self._record(str(body.get("event_id") or ""), "ignored")
            return
        self._tasks.spawn(self._handle_event(body, received), name=f"slack-event-{body.get('event_id', '?')}")

    async def _handle_event(self, body: dict[str, Any], received: float) -> None:
        outcome = "failed"
        try:
            outcome = await self._answer(body, received)
        finally:
            self._record(str(body.get("event_id") or ""), outcome)

    def _record(self, event_id: str, outcome: str) -> None:
        EVENTS.labels(outcome).inc()
        self.outcomes.setdefault(event_id, []).append(outcome)
        while len(self.outcomes) > OUTCOMES_KEPT:
            self.outcomes.popitem(last=False)
        self._outcome_changed.set()
        self._outcome_changed = asyncio.Event()

    async def wait_for_outcomes(self, event_id: str, count: int = 1) -> list[str]:
        """What became of the first `count` deliveries of an event, once they are settled:
        "answered", "reset", "duplicate", "ignored" or "failed"."""
        while len(self.outcomes.get(event_id, ())) < count:
            await self._outcome_changed.wait()
        return self.outcomes[event_id]

    async def _answer(self, body: dict[str, Any], received: float) -> str:
        me = await self.identity()
        incoming = parse_event(body, bot_user_id=me.user_id, bot_id=me.bot_id)
        if incoming is None or not await self._should_answer(incoming):
            return "ignored"
        if not await self._core.events.claim(PLATFORM, incoming.dedup_id, incoming.event_id):
            log.debug("event %s (%s) was delivered before: ignored", incoming.event_id, incoming.dedup_id)
            return "duplicate"
        text = await self._readable_text(incoming, me)
        if (incoming.mentioned or incoming.is_dm) and is_reset_request(text):
            await self._reset(incoming)
            return "reset"
        author = Author(incoming.user, incoming.bot_name or await self._users.name(incoming.user))
        surface = self._surface(incoming.team, incoming.channel, incoming.reply_thread)
        turn = Turn(
            key=incoming.key,
            author=author,
            text=text,
            platform_message_id=incoming.ts,
            received_at=received,
        )
        result = await self._core.engine.handle_turn(turn, surface)
        log.info("answered %s: %s", incoming.key.describe(), result.status)
        return "answered"

    async def _should_answer(self, incoming: Incoming) -> bool:
        """DMs and mentions always; later messages in a thread the bot talks in, per channel setting.

        Other bots are answered only where the channel allows bots, and only when they mention this
        bot (never as thread follow-ups): two bots following up on each other would never stop.
        """
        if incoming.from_bot:
            allowed = (await self._core.channels.get(PLATFORM, incoming.team, incoming.channel)).allow_bots
            return allowed and incoming.mentioned
        if incoming.is_dm or incoming.mentioned:
            return True
        if incoming.thread_ts is None or not await self._core.engine.has_conversation(incoming.key):
            return False
        channel_settings = await self._core.channels.get(PLATFORM, incoming.team, incoming.channel)
        return channel_settings.follow_up_in_threads

    async def _readable_text(self, incoming: Incoming, me: Identity) -> str:
        names = await self._users.names(mentioned_users(incoming.text) - {me.user_id})
        text = from_slack(incoming.text, user_name=lambda user: names.get(user, user), bot_user_id=me.user_id)
        if incoming.files:
            shared = ", ".join(incoming.files)
            text = f"{text}\n[shared files: {shared}]" if text else f"[shared files: {shared}]"
        return text

    async def _reset(self, incoming: Incoming) -> None:
        forgotten = await self._core.engine.reset_conversation(incoming.key)
        args: dict[str, Any] = {
            "channel": incoming.channel,
            "text": RESET_DONE if forgotten else RESET_NOTHING,
        }
        if incoming.reply_thread is not None:
            args["thread_ts"] = incoming.reply_thread
        try:
            await self._client.chat_postMessage(**args)
        except SlackApiError as exc:
            log.warning(
                "could not confirm the reset in %s: %s", incoming.key.describe(), exc.response.get("error")
            )
