"""A fake Slack: Web API, response URLs and a Socket Mode websocket, on 127.0.0.1 (random port).

The real `slack_sdk` / `slack_bolt` clients talk to it over loopback:

    async with FakeSlack() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)

What the fake does, like Slack does it:
- records every Web API call (`calls`: method, args, time) and keeps the messages it stores, with
  every version of their text (`messages`);
- lets a test script failures per method (`fail("chat.update", status=429, retry_after=1)`);
- delivers events, slash commands and view submissions to the app either as signed HTTP requests
  (`mode="http"`, to `events_url`) or as Socket Mode envelopes over the websocket (`mode="socket"`),
  with Slack's retry markers, and records what the app answered (HTTP body or envelope ack);
- echoes the bot's own posts and edits back as `message` / `message_changed` events, as Slack does
  for an app subscribed to channel messages (`echo_own_messages`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

SLACK_TEXT_LIMIT = 40_000  # chars; Slack answers msg_too_long above it


def sign(secret: str, timestamp: int | str, body: str) -> str:
    """Slack's request signature: v0= + HMAC-SHA256(secret, "v0:{timestamp}:{body}")."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float
    error: str | None = None  # the error the fake answered with (None: ok)


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    thread_ts: str | None
    user: str | None
    bot_id: str | None = None
    versions: list[str] = field(default_factory=list)  # every text it had, oldest first
    deleted: bool = False


@dataclass
class Failure:
    method: str
    error: str
    status: int = 200
    retry_after: float | None = None
    times: int = 1
    when: Callable[[dict[str, Any]], bool] | None = None


@dataclass
class Delivery:
    """What the app answered to one delivery (HTTP response or Socket Mode ack)."""

    status: int
    body: Any


class FakeSlack:
    def __init__(
        self,
        *,
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        app_id: str = "A0001",
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-fake-app-token",
        signing_secret: str = "fake-signing-secret",
        max_text_bytes: int | None = 4000,
    ) -> None:
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        # Slack truncates `text` at 40k chars, but chat.update fails with msg_too_long well before
        # (PLATFORMS.md): the fake rejects texts above this many UTF-8 bytes.
        self.max_text_bytes = max_text_bytes
        self.mode: Literal["http", "socket"] = "http"
        self.events_url: str | None = None  # the app's POST /slack/events, for HTTP deliveries
        self.echo_own_messages = True

        self.users: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.responses: list[dict[str, Any]] = []  # bodies posted to response_url
        self.ephemeral: list[dict[str, Any]] = []  # chat.postEphemeral + ephemeral response_url bodies
        self.views: dict[str, dict[str, Any]] = {}  # views.open, by view id
        self.rejected_views: list[str] = []  # why views.open refused a view
        self.acks: dict[str, dict[str, Any]] = {}  # Socket Mode acks by envelope id
        self.connections = 0  # websocket connections accepted
        self.port = 0

        self._failures: list[Failure] = []
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._ts_base = int(time.time())
        self._triggers: dict[str, float] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._ack_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self._background: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.add_user("U0001", "alice", real_name="Alice Liddell")

    # -- setup -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        display_name: str = "",
        is_admin: bool = False,
        is_owner: bool = False,
        is_primary_owner: bool = False,
        is_bot: bool = False,
    ) -> None:
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real_name or name,
            "is_admin": is_admin,
            "is_owner": is_owner,
            "is_primary_owner": is_primary_owner,
            "is_bot": is_bot,
            "profile": {"display_name": display_name, "real_name": real_name or name},
        }

    def fail(
        self,
        method: str,
        error: str = "ratelimited",
        *,
        status: int | None = None,
        retry_after: float | None = None,
        times: int = 1,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Make the next `times` calls of `method` fail (429 for `ratelimited` unless `status`)."""
        code = status if status is not None else (429 if error == "ratelimited" else 200)
        self._failures.append(Failure(method, error, code, retry_after, times, when))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{token}", self._response_url)
        app.router.add_get("/link/", self._websocket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for ws in list(self._sockets):
            await ws.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- observation -----------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The bot's (and others') messages stored in a thread, oldest first (the parent excluded)."""
        return sorted(
            (m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts),
            key=lambda m: float(m.ts),
        )

    def top_level(self, channel: str) -> list[Message]:
        return sorted(
            (m for m in self.messages.values() if m.channel == channel and m.thread_ts is None),
            key=lambda m: float(m.ts),
        )

    async def wait_until(self, predicate: Callable[[], bool], limit: float = 5.0) -> None:
        """Wait until `predicate()` holds (at most `limit` seconds); re-checked after every change seen,
        and every 50 ms for the changes that notify nobody (a delivery in the background ending)."""
        async with asyncio.timeout(limit), self._changed:
            while not predicate():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- deliveries to the app -------------------------------------------------------------------

    def new_ts(self) -> str:
        return f"{self._ts_base}.{next(self._ts):06d}"

    def new_event_id(self) -> str:
        return f"Ev{next(self._ids):08d}"

    def event_callback(self, event: Mapping[str, Any], event_id: str | None = None) -> dict[str, Any]:
        return {
            "token": "verification-token-unused",
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": dict(event),
            "type": "event_callback",
            "event_id": event_id or self.new_event_id(),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    async def deliver_event(
        self,
        event: Mapping[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        url: str | None = None,
    ) -> Delivery:
        """Send one event callback to the app (HTTP or Socket Mode, per `mode`).

        `url`: this HTTP delivery goes there instead of `events_url` (one replica behind a load balancer).
        """
        body = self.event_callback(event, event_id)
        if self.mode == "socket":
            return await self.send_envelope(
                "events_api", body, retry_attempt=retry_num, retry_reason=retry_reason
            )
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        return await self.post_signed(json.dumps(body), "application/json", headers=headers, url=url)

    async def post_signed(
        self,
        body: str,
        content_type: str,
        *,
        headers: Mapping[str, str] | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
        signed: bool = True,
        url: str | None = None,
    ) -> Delivery:
        """POST a body to the app's events URL (or `url`), signed like Slack (or not, wrongly, or stale)."""
        target = url or self.events_url
        assert target is not None and self._session is not None, "events_url not set"
        ts = int(time.time()) if timestamp is None else timestamp
        all_headers = {"Content-Type": content_type, **(headers or {})}
        if signed:
            all_headers["X-Slack-Request-Timestamp"] = str(ts)
            all_headers["X-Slack-Signature"] = sign(secret or self.signing_secret, ts, body)
        async with self._session.post(target, data=body.encode(), headers=all_headers) as response:
            text = await response.text()
            try:
                parsed: Any = json.loads(text) if text else None
            except ValueError:
                parsed = text
            return Delivery(response.status, parsed)

    def message_event(
        self,
        text: str,
        *,
        channel: str = "C0001",
        user: str = "U0001",
        thread_ts: str | None = None,
        channel_type: str = "channel",
        ts: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts or self.new_ts(),
            "team": self.team_id,
            "channel_type": channel_type,
            "event_ts": "",
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        event.update(extra)
        event["event_ts"] = event["ts"]
        return event

    def mention_event(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """The `app_mention` event Slack sends beside the `message` event of a mention."""
        event = {k: v for k, v in message.items() if k != "channel_type"}
        event["type"] = "app_mention"
        return event

    async def user_says(
        self,
        text: str,
        *,
        channel: str = "C0001",
        user: str = "U0001",
        thread_ts: str | None = None,
        channel_type: str = "channel",
        both_events: bool = True,
    ) -> dict[str, Any]:
        """A person posts a message: the `message` event, plus `app_mention` when the bot is mentioned.

        Returns the message event (its `ts` is the thread a top-level mention is answered in).
        """
        message = self.message_event(
            text, channel=channel, user=user, thread_ts=thread_ts, channel_type=channel_type
        )
        mentioned = f"<@{self.bot_user_id}>" in text and channel_type != "im"
        if mentioned:
            await self.deliver_event(self.mention_event(message))
        if both_events or not mentioned:
            await self.deliver_event(message)
        return message

    def command_payload(
        self, text: str, *, command: str = "/persona", user: str = "U0001", channel: str = "C0001"
    ) -> dict[str, str]:
        trigger = f"{next(self._ids)}.{uuid.uuid4().hex[:12]}"
        self._triggers[trigger] = time.monotonic()
        return {
            "token": "verification-token-unused",
            "team_id": self.team_id,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": f"{self.url}/response/{uuid.uuid4().hex}",
            "trigger_id": trigger,
        }

    async def run_command(
        self, text: str, *, command: str = "/persona", user: str = "U0001", channel: str = "C0001"
    ) -> Delivery:
        payload = self.command_payload(text, command=command, user=user, channel=channel)
        if self.mode == "socket":
            return await self.send_envelope("slash_commands", payload, accepts_response_payload=True)
        return await self.post_signed(urlencode(payload), "application/x-www-form-urlencoded")

    def view_submission(
        self, view_id: str, values: Mapping[str, str], *, user: str = "U0001"
    ) -> dict[str, Any]:
        """A view_submission payload for an opened view, with the inputs set to `values` (by block id).

        Inputs not in `values` keep their `initial_value` (what a person who did not touch them sends).
        """
        view = self.views[view_id]
        state: dict[str, Any] = {}
        for block in view.get("blocks", []):
            if block.get("type") != "input":
                continue
            element = block["element"]
            value = values.get(block["block_id"], element.get("initial_value"))
            state[block["block_id"]] = {
                element["action_id"]: {"type": element["type"], "value": value or None}
            }
        return {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "fake"},
            "user": {"id": user, "team_id": self.team_id, "name": self.users.get(user, {}).get("name", user)},
            "api_app_id": self.app_id,
            "token": "verification-token-unused",
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex[:12]}",
            "view": {
                **view,
                "id": view_id,
                "team_id": self.team_id,
                "state": {"values": state},
                "hash": uuid.uuid4().hex,
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }

    async def submit_view(self, view_id: str, values: Mapping[str, str], *, user: str = "U0001") -> Delivery:
        payload = self.view_submission(view_id, values, user=user)
        if self.mode == "socket":
            return await self.send_envelope("interactive", payload, accepts_response_payload=True)
        return await self.post_signed(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )

    # -- Socket Mode -----------------------------------------------------------------------------

    async def send_envelope(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        retry_attempt: int | None = None,
        retry_reason: str = "timeout",
        accepts_response_payload: bool = False,
        ack_timeout: float = 3.0,
    ) -> Delivery:
        """Send an envelope over the open websocket and wait for the app's ack (Slack waits 3 s)."""
        await self.wait_until(lambda: bool(self._sockets), limit=5.0)
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": dict(payload),
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason if retry_attempt else ""
        waiter = asyncio.get_running_loop().create_future()
        self._ack_waiters[envelope_id] = waiter
        await self._sockets[-1].send_str(json.dumps(envelope))
        try:
            ack = await asyncio.wait_for(waiter, ack_timeout)
        except TimeoutError:
            return Delivery(408, None)
        finally:
            self._ack_waiters.pop(envelope_id, None)
        return Delivery(200, ack.get("payload"))

    async def drop_socket(self) -> None:
        """Close the app's websocket, as Slack does on refresh (the client reconnects)."""
        for ws in list(self._sockets):
            await ws.close()

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": self.app_id},
                }
            )
        )
        self._sockets.append(ws)
        await self._notify()
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                envelope_id = data.get("envelope_id")
                if envelope_id:
                    self.acks[envelope_id] = data
                    waiter = self._ack_waiters.get(envelope_id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(data)
                    await self._notify()
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    # -- Web API ---------------------------------------------------------------------------------

    async def _read_args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            raw = await request.text()
            if request.content_type == "application/json":
                args.update(json.loads(raw) if raw else {})
            else:
                args.update(dict(parse_qsl(raw, keep_blank_values=True)))
        for key in ("blocks", "view", "attachments"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._read_args(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        call = Call(method, args, token, time.monotonic())
        self.calls.append(call)
        try:
            response = await self._answer(method, args, token)
            data = json.loads(bytes(response.body or b"{}"))  # type: ignore[arg-type]
            if not data.get("ok"):
                call.error = str(data.get("error"))
            return response
        finally:
            await self._notify()

    async def _answer(self, method: str, args: dict[str, Any], token: str | None) -> web.Response:
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return self._error("invalid_auth" if token else "not_authed")
        failure = self._scripted_failure(method, args)
        if failure is not None:
            return failure
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return self._error("unknown_method", status=404)
        result: dict[str, Any] | web.Response = await handler(args)
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, **result})

    def _scripted_failure(self, method: str, args: dict[str, Any]) -> web.Response | None:
        for failure in self._failures:
            if failure.method != method or failure.times <= 0:
                continue
            if failure.when is not None and not failure.when(args):
                continue
            failure.times -= 1
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = f"{failure.retry_after:g}"
            return self._error(failure.error, status=failure.status, headers=headers)
        return None

    @staticmethod
    def _error(error: str, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.json_response({"ok": False, "error": error}, status=status, headers=dict(headers or {}))

    def _text_error(self, text: str) -> web.Response | None:
        if not text:
            return self._error("no_text")
        if len(text) > SLACK_TEXT_LIMIT:
            return self._error("msg_too_long")
        if self.max_text_bytes is not None and len(text.encode()) > self.max_text_bytes:
            return self._error("msg_too_long")
        return None

    async def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "threadline",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={uuid.uuid4().hex}"}

    async def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any] | web.Response:
        text = str(args.get("text") or "")
        error = self._text_error(text)
        if error is not None:
            return error
        channel = str(args["channel"])
        ts = self.new_ts()
        thread_ts = args.get("thread_ts") or None
        message = Message(channel, ts, text, thread_ts, self.bot_user_id, self.bot_id, [text])
        self.messages[(channel, ts)] = message
        if self.echo_own_messages:
            echo = self.message_event(
                text, channel=channel, user=self.bot_user_id, thread_ts=thread_ts, ts=ts, bot_id=self.bot_id
            )
            self._spawn(self._echo(echo))
        return {"channel": channel, "ts": ts, "message": {"text": text, "ts": ts, "bot_id": self.bot_id}}

    async def _chat_update(self, args: dict[str, Any]) -> dict[str, Any] | web.Response:
        channel, ts = str(args["channel"]), str(args["ts"])
        message = self.messages.get((channel, ts))
        if message is None or message.deleted:
            return self._error("message_not_found")
        if message.user != self.bot_user_id:
            return self._error("cant_update_message")
        text = str(args.get("text") or "")
        error = self._text_error(text)
        if error is not None:
            return error
        previous = message.text
        message.text = text
        message.versions.append(text)
        if self.echo_own_messages:
            changed = {
                "type": "message",
                "subtype": "message_changed",
                "channel": channel,
                "hidden": True,
                "ts": self.new_ts(),
                "message": {
                    "type": "message",
                    "text": text,
                    "ts": ts,
                    "user": self.bot_user_id,
                    "bot_id": self.bot_id,
                },
                "previous_message": {"type": "message", "text": previous, "ts": ts},
                "channel_type": "channel",
            }
            self._spawn(self._echo(changed))
        return {"channel": channel, "ts": ts, "text": text}

    async def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any] | web.Response:
        message = self.messages.get((str(args["channel"]), str(args["ts"])))
        if message is None or message.deleted:
            return self._error("message_not_found")
        message.deleted = True
        return {"channel": message.channel, "ts": message.ts}

    def delete_message(self, channel: str, ts: str) -> None:
        """A person deletes a message (the bot's edits then fail with message_not_found)."""
        self.messages[(channel, ts)].deleted = True

    async def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any] | web.Response:
        if not args.get("text") and not args.get("blocks"):
            return self._error("no_text")
        self.ephemeral.append(dict(args))
        return {"message_ts": self.new_ts()}

    async def _users_info(self, args: dict[str, Any]) -> dict[str, Any] | web.Response:
        user = self.users.get(str(args.get("user")))
        if user is None:
            return self._error("user_not_found")
        return {"user": user}

    async def _views_open(self, args: dict[str, Any]) -> dict[str, Any] | web.Response:
        trigger = str(args.get("trigger_id"))
        issued = self._triggers.pop(trigger, None)
        if issued is None:
            return self._error("invalid_trigger_id")
        if time.monotonic() - issued > 3.0:
            return self._error("expired_trigger_id")
        view = args.get("view")
        if not isinstance(view, dict) or view.get("type") != "modal":
            return self._error("invalid_arguments")
        problem = _check_modal(view)
        if problem is not None:
            self.rejected_views.append(problem)
            return self._error("invalid_arguments")
        view_id = f"V{next(self._ids):08d}"
        self.views[view_id] = view
        return {"view": {"id": view_id, **view}}

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append(body)
        if body.get("response_type", "ephemeral") == "ephemeral":
            self.ephemeral.append(body)
        self.calls.append(Call("response_url", body, None, time.monotonic()))
        await self._notify()
        return web.Response(text="ok")

    async def _echo(self, event: Mapping[str, Any]) -> None:
        """Deliver the bot's own message back; an app that is down (or stopping) just misses it."""
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await self.deliver_event(event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _check_modal(view: Mapping[str, Any]) -> str | None:
    """The limits Slack enforces on a modal that a bad one would break (None when fine)."""
    title = view.get("title", {}).get("text", "")
    if not title or len(title) > 24:
        return "title must be 1–24 characters"
    blocks = view.get("blocks", [])
    if len(blocks) > 100:
        return "at most 100 blocks"
    for block in blocks:
        if block.get("type") != "input":
            continue
        if len(block.get("label", {}).get("text", "")) > 2000:
            return "label too long"
        element = block.get("element", {})
        if len(str(element.get("initial_value") or "")) > int(element.get("max_length") or 3000):
            return "initial_value too long"
        hint = block.get("hint", {}).get("text", "")
        if len(hint) > 2000:
            return "hint too long"
    return None
