"""A fake Discord (REST + gateway) on 127.0.0.1 that the real discord.py client talks to.

* REST under `/api/v10`: login, gateway discovery, channel messages, threads, interaction callbacks and
  webhook follow-ups, application commands. Every request is recorded (method, path, JSON body, time).
  JSON answers carry `Content-Type: application/json` exactly (discord.py compares the header).
* Gateway under `/gateway`: HELLO → IDENTIFY → READY → GUILD_CREATE (per shard), heartbeats ACKed,
  RESUME answered, frames compressed as the client asked (`zlib-stream`, or `zstd-stream`).
* Tests inject events (`dispatch`, `send_message`, `run_command`, ...) and script failures
  (`fail_next(...)`, e.g. a 429 with `retry_after` and the `Via` header discord.py needs to retry).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

from tests.fakes.discord_payloads import (
    BOT_PERMISSIONS,
    MEMBER_PERMISSIONS,
    FakeChannel,
    FakeGuild,
    FakeMessage,
    FakeUser,
    snowflake,
)

API_PREFIX = "/api/v10"
MAX_CONTENT = 2000
JSON_BODY: web.RequestKey[Any] = web.RequestKey("json_body", object)
EPHEMERAL = 64
LOADING = 128


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any
    time: float  # time.monotonic()
    status: int = 0
    bot_auth: bool = False


@dataclass
class ScriptedFailure:
    method: str
    path: re.Pattern[str]
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int


@dataclass
class FakeInteraction:
    id: int
    token: str
    type: int
    channel_id: int
    guild_id: int | None
    user: FakeUser
    data: dict[str, Any]
    responded: int | None = None  # callback type
    response_data: dict[str, Any] | None = None
    original_id: int | None = None
    followups: list[int] = field(default_factory=list)
    expired: bool = False
    created: float = field(default_factory=time.monotonic)

    @property
    def modal(self) -> dict[str, Any] | None:
        return self.response_data if self.responded == 9 else None

    @property
    def choices(self) -> list[dict[str, Any]]:
        return list((self.response_data or {}).get("choices", [])) if self.responded == 8 else []


class _Compressor:
    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self._zlib = zlib.compressobj() if kind == "zlib-stream" else None
        self._zstd: Any = None
        if kind == "zstd-stream":
            import zstandard  # type: ignore[import-not-found]  # only when discord.py asked for it

            self._zstd = zstandard.ZstdCompressor().compressobj()
            self._zstd_mod = zstandard

    def frame(self, payload: dict[str, Any]) -> bytes | str:
        raw = json.dumps(payload).encode()
        if self._zlib is not None:
            return self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        if self._zstd is not None:
            return bytes(self._zstd.compress(raw) + self._zstd.flush(self._zstd_mod.COMPRESSOBJ_FLUSH_BLOCK))
        return raw.decode()


@dataclass
class _Connection:
    ws: web.WebSocketResponse
    compressor: _Compressor
    shard: tuple[int, int] = (0, 1)
    seq: int = 0
    session_id: str = field(default_factory=lambda: secrets.token_hex(8))
    identified: asyncio.Event = field(default_factory=asyncio.Event)
    intents: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, payload: dict[str, Any]) -> None:
        async with self.lock:
            frame = self.compressor.frame(payload)
            if isinstance(frame, bytes):
                await self.ws.send_bytes(frame)
            else:
                await self.ws.send_str(frame)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def _error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    return _json({"message": message, "code": code, **extra}, status=status)


class FakeDiscord:
    def __init__(self, *, token: str = "fake-bot-token", bot_name: str = "Threadline") -> None:
        self.token = token
        self.bot = FakeUser(snowflake(), bot_name.lower(), bot_name, bot=True)
        self.application_id = self.bot.id
        self.requests: list[RecordedRequest] = []
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global) → commands
        self.command_writes = 0
        self.connections: list[_Connection] = []
        self.identifies: list[dict[str, Any]] = []
        self._failures: list[ScriptedFailure] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.changed = asyncio.Condition()

    # ----------------------------------------------------------------- lifecycle
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ----------------------------------------------------------------- world building
    def add_guild(
        self, name: str = "Test Guild", *, everyone_permissions: int = MEMBER_PERMISSIONS
    ) -> FakeGuild:
        guild = FakeGuild(snowflake(), name, everyone_permissions)
        self.guilds[guild.id] = guild
        return guild

    def add_channel(self, guild: FakeGuild, name: str = "general") -> FakeChannel:
        channel = FakeChannel(snowflake(), guild.id, name)
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    def add_thread(
        self,
        parent: FakeChannel,
        name: str = "a thread",
        *,
        thread_id: int | None = None,
        archived: bool = False,
        locked: bool = False,
    ) -> FakeChannel:
        thread = FakeChannel(
            thread_id or snowflake(),
            parent.guild_id,
            name,
            type=11,
            parent_id=parent.id,
            owner_id=self.bot.id,
            archived=archived,
            locked=locked,
        )
        self.guilds[parent.guild_id].channels[thread.id] = thread
        self.channels[thread.id] = thread
        return thread

    def add_role(self, guild: FakeGuild, name: str) -> int:
        role_id = snowflake()
        guild.roles[role_id] = name
        return role_id

    @staticmethod
    def user(name: str, *, bot: bool = False) -> FakeUser:
        return FakeUser(snowflake(), name.lower(), name, bot=bot)

    # ----------------------------------------------------------------- scripting
    def fail_next(
        self,
        method: str,
        path: str,
        *,
        status: int,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` requests matching METHOD and the path regex get this answer instead."""
        self._failures.append(
            ScriptedFailure(method.upper(), re.compile(path), status, body or {}, headers or {}, times)
        )

    def rate_limit_next(self, method: str, path: str, *, retry_after: float, via: bool = True) -> None:
        headers = {"Retry-After": str(retry_after), "X-RateLimit-Scope": "user"}
        if via:
            headers["Via"] = "1.1 google"
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        self.fail_next(method, path, status=429, body=body, headers=headers)

    # ----------------------------------------------------------------- inspection
    def channel_messages(self, channel_id: int, *, include_ephemeral: bool = False) -> list[FakeMessage]:
        return [
            m
            for m in self.messages.values()
            if m.channel_id == channel_id and not m.deleted and (include_ephemeral or not m.ephemeral)
        ]

    def bot_messages(self, channel_id: int) -> list[FakeMessage]:
        return [m for m in self.channel_messages(channel_id) if m.author.id == self.bot.id]

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method and pattern.search(r.path)]

    def message_writes(self) -> list[RecordedRequest]:
        """Every request that created or changed message content."""
        return [
            r
            for r in self.requests
            if r.method in {"POST", "PATCH"}
            and isinstance(r.json, dict)
            and ("content" in r.json or "data" in r.json)
            and ("/messages" in r.path or "/webhooks/" in r.path or r.path.endswith("/callback"))
        ]

    async def wait_for(self, predicate: Callable[[], Any], within: float = 5.0) -> Any:
        """Wait until `predicate()` is truthy (checked after every request and event)."""

        async def _wait() -> Any:
            async with self.changed:
                while not (result := predicate()):
                    await self.changed.wait()
                return result

        return await asyncio.wait_for(_wait(), within)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # ----------------------------------------------------------------- gateway
    async def wait_identified(self, count: int = 1, within: float = 5.0) -> None:
        await self.wait_for(lambda: sum(c.identified.is_set() for c in self.connections) >= count, within)

    async def dispatch(self, event: str, data: dict[str, Any], *, guild_id: int | None = None) -> None:
        conns = [c for c in self.connections if c.identified.is_set() and not c.ws.closed]
        if guild_id is not None:
            conns = [c for c in conns if (guild_id >> 22) % c.shard[1] == c.shard[0]] or conns[:1]
        else:
            conns = [c for c in conns if c.shard[0] == 0][:1]
        for conn in conns:
            conn.seq += 1
            await conn.send({"op": 0, "t": event, "s": conn.seq, "d": data})

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = _Connection(ws, _Compressor(request.query.get("compress")))
        self.connections.append(conn)
        await conn.send({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                await self._gateway_op(conn, payload)
        finally:
            if conn in self.connections:
                self.connections.remove(conn)
        return ws

    async def _gateway_op(self, conn: _Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d") or {}
        if op == 1:
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            assert data["token"] == self.token, "IDENTIFY carried a wrong token"
            self.identifies.append(data)
            conn.intents = int(data.get("intents", 0))
            shard = data.get("shard") or [0, 1]
            conn.shard = (int(shard[0]), int(shard[1]))
            await self._ready(conn)
        elif op == 6:
            conn.seq += 1
            await conn.send({"op": 0, "t": "RESUMED", "s": conn.seq, "d": {}})
        await self._notify()

    async def _ready(self, conn: _Connection) -> None:
        shard_id, count = conn.shard
        mine = [g for g in self.guilds.values() if (g.id >> 22) % count == shard_id]
        conn.seq += 1
        await conn.send(
            {
                "op": 0,
                "t": "READY",
                "s": conn.seq,
                "d": {
                    "v": 10,
                    "user": self.bot.payload(),
                    "guilds": [{"id": str(g.id), "unavailable": True} for g in mine],
                    "session_id": conn.session_id,
                    "resume_gateway_url": self.gateway_url,
                    "shard": [shard_id, count],
                    "application": {"id": str(self.application_id), "flags": 0},
                    "private_channels": [],
                    "relationships": [],
                },
            }
        )
        for guild in mine:
            conn.seq += 1
            await conn.send({"op": 0, "t": "GUILD_CREATE", "s": conn.seq, "d": guild.payload(self.bot)})
        conn.identified.set()

    # ----------------------------------------------------------------- injecting events
    async def send_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        content: str,
        *,
        mentions: list[FakeUser] | None = None,
        mention_roles: list[int] | None = None,
        message_content_intent: bool | None = None,
        message_id: int | None = None,
    ) -> FakeMessage:
        """A person posts in a channel; the bot receives MESSAGE_CREATE.

        Without the message-content intent Discord blanks the content unless the bot is mentioned
        (decided per gateway connection, as Discord does).
        """
        message = FakeMessage(
            message_id or snowflake(),
            channel.id,
            channel.guild_id,
            author,
            content,
            mentions=list(mentions or []),
            mention_roles=list(mention_roles or []),
        )
        message.history.append(content)
        self.messages[message.id] = message
        await self._dispatch_message(message, message_content_intent)
        return message

    async def redeliver(self, message: FakeMessage) -> None:
        """Dispatch MESSAGE_CREATE for a message again (as after a RESUME replay)."""
        await self._dispatch_message(message, None)

    async def _dispatch_message(
        self, message: FakeMessage, intent_override: bool | None, event: str = "MESSAGE_CREATE"
    ) -> None:
        """MESSAGE_CREATE (or MESSAGE_UPDATE after an edit) to the shard of the message's guild: as on
        Discord, the bot also receives its own posts and edits."""
        for conn in self.connections:
            if not conn.identified.is_set() or conn.ws.closed:
                continue
            if ((message.guild_id or 0) >> 22) % conn.shard[1] != conn.shard[0]:
                continue
            has_intent = bool(conn.intents & (1 << 15)) if intent_override is None else intent_override
            payload = message.payload()
            payload["member"] = {k: v for k, v in message.author.member_payload().items() if k != "user"}
            payload["mentions"] = [
                {**u.payload(), "member": {k: v for k, v in u.member_payload().items() if k != "user"}}
                for u in message.mentions
            ]
            mentioned = any(u.id == self.bot.id for u in message.mentions)
            if not has_intent and not mentioned and message.author.id != self.bot.id:
                payload["content"] = ""
            conn.seq += 1
            await conn.send({"op": 0, "t": event, "s": conn.seq, "d": payload})
            return

    async def run_command(
        self,
        channel: FakeChannel,
        user: FakeUser,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        permissions: int = MEMBER_PERMISSIONS,
        command_type: int = 1,
    ) -> FakeInteraction:
        """A person runs `/name ...`; `options` as Discord sends them ({"name", "type", "value"})."""
        data = {"id": str(snowflake()), "name": name, "type": command_type, "options": options or []}
        return await self._interact(2, channel, user, data, permissions)

    async def autocomplete(
        self,
        channel: FakeChannel,
        user: FakeUser,
        name: str,
        options: list[dict[str, Any]],
        *,
        permissions: int = MEMBER_PERMISSIONS,
    ) -> FakeInteraction:
        data = {"id": str(snowflake()), "name": name, "type": 1, "options": options}
        return await self._interact(4, channel, user, data, permissions)

    async def submit_modal(
        self,
        channel: FakeChannel,
        user: FakeUser,
        modal: dict[str, Any],
        values: dict[str, str],
        *,
        permissions: int = MEMBER_PERMISSIONS,
    ) -> FakeInteraction:
        """Submit a modal the bot opened, typing `values` (custom_id → text) over its defaults."""
        components = []
        for component in modal["components"]:
            inner = component.get("component") or component.get("components", [None])[0]
            if inner is None or inner.get("type") != 4:
                continue
            value = values.get(inner["custom_id"], inner.get("value") or "")
            components.append(
                {"type": 18, "component": {"type": 4, "custom_id": inner["custom_id"], "value": value}}
            )
        data = {"custom_id": modal["custom_id"], "components": components}
        return await self._interact(5, channel, user, data, permissions)

    async def click(
        self, message: FakeMessage, user: FakeUser, custom_id: str, *, permissions: int = MEMBER_PERMISSIONS
    ) -> FakeInteraction:
        channel = self.channels[message.channel_id]
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(3, channel, user, data, permissions, message=message)

    async def _interact(
        self,
        kind: int,
        channel: FakeChannel,
        user: FakeUser,
        data: dict[str, Any],
        permissions: int,
        message: FakeMessage | None = None,
    ) -> FakeInteraction:
        interaction = FakeInteraction(
            snowflake(), "itok-" + secrets.token_urlsafe(24), kind, channel.id, channel.guild_id, user, data
        )
        self.interactions[interaction.id] = interaction
        payload: dict[str, Any] = {
            "id": str(interaction.id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": interaction.token,
            "version": 1,
            "data": data,
            "guild_id": str(channel.guild_id),
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "member": user.member_payload(permissions),
            "app_permissions": str(BOT_PERMISSIONS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(channel.guild_id)},
            "context": 0,
            "attachment_size_limit": 8 * 1024 * 1024,
        }
        if message is not None:
            payload["message"] = message.payload()
        await self.dispatch("INTERACTION_CREATE", payload, guild_id=channel.guild_id)
        return interaction

    async def wait_response(self, interaction: FakeInteraction, within: float = 5.0) -> FakeInteraction:
        await self.wait_for(lambda: interaction.responded is not None, within)
        return interaction

    def original(self, interaction: FakeInteraction) -> FakeMessage:
        assert interaction.original_id is not None, "the interaction has no response message"
        return self.messages[interaction.original_id]

    # ----------------------------------------------------------------- REST
    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        path = request.path[len(API_PREFIX) :]
        body: Any = None
        if request.can_read_body and request.content_type == "application/json":
            body = await request.json()
        bot_auth = request.headers.get("Authorization") == f"Bot {self.token}"
        index = len(self.requests)
        self.requests.append(
            RecordedRequest(request.method, path, dict(request.query), body, time.monotonic(), 0, bot_auth)
        )
        request[JSON_BODY] = body
        response: web.StreamResponse
        failure = self._take_failure(request.method, path)
        if failure is not None:
            response = _json(failure.body, failure.status, failure.headers)
        else:
            response = await handler(request)
        recorded = self.requests[index]
        self.requests[index] = RecordedRequest(
            recorded.method,
            recorded.path,
            recorded.query,
            recorded.json,
            recorded.time,
            response.status,
            bot_auth,
        )
        await self._notify()
        return response

    def _take_failure(self, method: str, path: str) -> ScriptedFailure | None:
        for failure in self._failures:
            if failure.method == method and failure.path.search(path):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    _ROUTES: ClassVar[list[tuple[str, re.Pattern[str], str]]] = [
        (m, re.compile("^" + p + "$"), h)
        for m, p, h in [
            ("GET", r"/users/@me", "_me"),
            ("GET", r"/oauth2/applications/@me", "_application"),
            ("GET", r"/applications/@me", "_application"),
            ("GET", r"/gateway", "_gateway_url"),
            ("GET", r"/gateway/bot", "_gateway_bot"),
            ("POST", r"/interactions/(\d+)/([^/]+)/callback", "_callback"),
            ("GET", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", "_webhook_get"),
            ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", "_webhook_edit"),
            ("DELETE", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", "_webhook_delete"),
            ("POST", r"/webhooks/(\d+)/([^/]+)", "_webhook_post"),
            ("POST", r"/channels/(\d+)/messages", "_post_message"),
            ("GET", r"/channels/(\d+)/messages/(\d+)", "_get_message"),
            ("PATCH", r"/channels/(\d+)/messages/(\d+)", "_edit_message"),
            ("DELETE", r"/channels/(\d+)/messages/(\d+)", "_delete_message"),
            ("POST", r"/channels/(\d+)/messages/(\d+)/threads", "_start_thread"),
            ("GET", r"/channels/(\d+)", "_get_channel"),
            ("PATCH", r"/channels/(\d+)", "_edit_channel"),
            ("POST", r"/channels/(\d+)/typing", "_typing"),
            ("GET", r"/applications/(\d+)/commands", "_get_commands"),
            ("PUT", r"/applications/(\d+)/commands", "_put_commands"),
            ("GET", r"/applications/(\d+)/guilds/(\d+)/commands", "_get_commands"),
            ("PUT", r"/applications/(\d+)/guilds/(\d+)/commands", "_put_commands"),
        ]
    ]

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = request.path[len(API_PREFIX) :]
        for method, pattern, handler_name in self._ROUTES:
            match = pattern.match(path)
            if match and method == request.method:
                needs_bot = not handler_name.startswith(("_webhook", "_callback"))
                if needs_bot and request.headers.get("Authorization") != f"Bot {self.token}":
                    return _error(401, 0, "401: Unauthorized")
                handler = getattr(self, handler_name)
                result: web.StreamResponse = await handler(request, *match.groups())
                return result
        return _error(404, 0, "404: Not Found")

    async def _me(self, _request: web.Request) -> web.Response:
        return _json(self.bot.payload())

    async def _application(self, _request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.application_id),
                "name": self.bot.global_name,
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.user("Owner").payload(),
                "verify_key": "0" * 64,
                "flags": 0,
                "interactions_endpoint_url": None,
                "summary": "",
                "team": None,
                "rpc_origins": [],
            }
        )

    async def _gateway_url(self, _request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _gateway_bot(self, _request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    # interactions ------------------------------------------------------
    def _interaction(self, token: str) -> FakeInteraction | None:
        for interaction in self.interactions.values():
            if interaction.token == token:
                return interaction
        return None

    def _new_message(
        self,
        channel_id: int,
        content: str,
        *,
        flags: int = 0,
        interaction: FakeInteraction | None = None,
        allowed_mentions: Any = None,
        components: list[Any] | None = None,
        reference: int | None = None,
    ) -> FakeMessage:
        channel = self.channels.get(channel_id)
        message = FakeMessage(
            snowflake(),
            channel_id,
            channel.guild_id if channel else None,
            self.bot,
            content,
            flags=flags,
            webhook_id=self.application_id if interaction else None,
            interaction_id=interaction.id if interaction else None,
            allowed_mentions=allowed_mentions,
            components=components or [],
            reference=reference,
        )
        message.history.append(content)
        self.messages[message.id] = message
        return message

    async def _callback(self, request: web.Request, interaction_id: str, token: str) -> web.Response:
        interaction = self.interactions.get(int(interaction_id))
        if interaction is None or interaction.token != token:
            return _error(404, 10062, "Unknown interaction")
        if interaction.responded is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - interaction.created > 3.0:
            return _error(404, 10062, "Unknown interaction")
        body = request[JSON_BODY] or {}
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        interaction.responded = kind
        interaction.response_data = data
        resource: dict[str, Any] = {"type": kind}
        if kind in (4, 5):
            content = data.get("content") or ""
            if len(content) > MAX_CONTENT:
                return _too_long()
            flags = int(data.get("flags", 0)) | (LOADING if kind == 5 else 0)
            message = self._new_message(
                interaction.channel_id,
                content,
                flags=flags,
                interaction=interaction,
                allowed_mentions=data.get("allowed_mentions"),
                components=data.get("components"),
            )
            interaction.original_id = message.id
            resource["message"] = message.payload()
        elif kind == 7 and interaction.type == 3:
            updated = self._component_message(interaction)
            if updated is not None and "content" in data:
                updated.content = data["content"] or ""
                updated.history.append(updated.content)
            if updated is not None and "components" in data:
                updated.components = data["components"] or []
        return _json(
            {
                "interaction": {
                    "id": str(interaction.id),
                    "type": interaction.type,
                    "response_message_id": str(interaction.original_id) if interaction.original_id else None,
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(int(data.get("flags", 0)) & EPHEMERAL),
                },
                "resource": resource,
            }
        )

    def _component_message(self, interaction: FakeInteraction) -> FakeMessage | None:
        for message in self.messages.values():
            if any(
                child.get("custom_id") == interaction.data.get("custom_id")
                for row in message.components
                for child in row.get("components", [])
            ):
                return message
        return None

    def _webhook_target(
        self, app_id: str, token: str, message_id: str
    ) -> tuple[FakeInteraction | None, FakeMessage | None, web.Response | None]:
        interaction = self._interaction(token)
        if int(app_id) != self.application_id or interaction is None or interaction.expired:
            return None, None, _error(401, 50027, "Invalid Webhook Token")
        target_id = interaction.original_id if message_id == "@original" else int(message_id)
        message = self.messages.get(target_id) if target_id else None
        if message is None or message.deleted or message.interaction_id != interaction.id:
            return interaction, None, _error(404, 10008, "Unknown Message")
        return interaction, message, None

    async def _webhook_get(self, _r: web.Request, app_id: str, token: str, message_id: str) -> web.Response:
        _, message, error = self._webhook_target(app_id, token, message_id)
        return error or _json(message.payload())  # type: ignore[union-attr]

    async def _webhook_edit(
        self, request: web.Request, app_id: str, token: str, message_id: str
    ) -> web.Response:
        _, message, error = self._webhook_target(app_id, token, message_id)
        if error is not None or message is None:
            return error or _error(404, 10008, "Unknown Message")
        return await self._apply_edit(message, request[JSON_BODY] or {})

    async def _webhook_delete(
        self, _r: web.Request, app_id: str, token: str, message_id: str
    ) -> web.Response:
        _, message, error = self._webhook_target(app_id, token, message_id)
        if error is not None or message is None:
            return error or _error(404, 10008, "Unknown Message")
        message.deleted = True
        return web.Response(status=204)

    async def _webhook_post(self, request: web.Request, app_id: str, token: str) -> web.Response:
        interaction = self._interaction(token)
        if int(app_id) != self.application_id or interaction is None or interaction.expired:
            return _error(401, 50027, "Invalid Webhook Token")
        body = request[JSON_BODY] or {}
        content = body.get("content") or ""
        if len(content) > MAX_CONTENT:
            return _too_long()
        flags = int(body.get("flags", 0))
        if interaction.original_id is not None and self.messages[interaction.original_id].flags & LOADING:
            # The first follow-up of a deferred interaction replaces the "thinking" message.
            message = self.messages[interaction.original_id]
            message.flags = flags
            message.content = content
            message.history.append(content)
            message.allowed_mentions = body.get("allowed_mentions")
        else:
            message = self._new_message(
                interaction.channel_id,
                content,
                flags=flags,
                interaction=interaction,
                allowed_mentions=body.get("allowed_mentions"),
                components=body.get("components"),
            )
            interaction.followups.append(message.id)
        return _json(message.payload())

    # channel messages -----------------------------------------------------
    def _writable(self, channel_id: int, *, posting: bool) -> web.Response | FakeChannel:
        channel = self.channels.get(channel_id)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        if channel.is_thread and channel.archived:
            if channel.locked or not posting:
                return _error(400, 50083, "Thread is archived")
            channel.archived = False  # posting un-archives an unlocked thread
        return channel

    async def _post_message(self, request: web.Request, channel_id: str) -> web.Response:
        channel = self._writable(int(channel_id), posting=True)
        if isinstance(channel, web.Response):
            return channel
        body = request[JSON_BODY] or {}
        content = body.get("content") or ""
        if not content and not body.get("embeds"):
            return _error(400, 50006, "Cannot send an empty message")
        if len(content) > MAX_CONTENT:
            return _too_long()
        reference = (body.get("message_reference") or {}).get("message_id")
        message = self._new_message(
            channel.id,
            content,
            allowed_mentions=body.get("allowed_mentions"),
            components=body.get("components"),
            reference=int(reference) if reference else None,
        )
        await self._dispatch_message(message, None)
        return _json(message.payload())

    def _channel_message(self, channel_id: str, message_id: str) -> FakeMessage | web.Response:
        message = self.messages.get(int(message_id))
        if message is None or message.deleted or message.channel_id != int(channel_id):
            return _error(404, 10008, "Unknown Message")
        return message

    async def _get_message(self, _r: web.Request, channel_id: str, message_id: str) -> web.Response:
        message = self._channel_message(channel_id, message_id)
        return message if isinstance(message, web.Response) else _json(message.payload())

    async def _edit_message(self, request: web.Request, channel_id: str, message_id: str) -> web.Response:
        channel = self._writable(int(channel_id), posting=False)
        if isinstance(channel, web.Response):
            return channel
        message = self._channel_message(channel_id, message_id)
        if isinstance(message, web.Response):
            return message
        if message.author.id != self.bot.id or message.ephemeral:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        return await self._apply_edit(message, request[JSON_BODY] or {})

    async def _apply_edit(self, message: FakeMessage, body: dict[str, Any]) -> web.Response:
        if "content" in body:
            content = body["content"] or ""
            if len(content) > MAX_CONTENT:
                return _too_long()
            message.content = content
            message.history.append(content)
            message.flags &= ~LOADING
        if "components" in body:
            message.components = body["components"] or []
        message.allowed_mentions = body.get("allowed_mentions")
        if not message.ephemeral:
            await self._dispatch_message(message, None, "MESSAGE_UPDATE")
        return _json(message.payload())

    async def _delete_message(self, _r: web.Request, channel_id: str, message_id: str) -> web.Response:
        message = self._channel_message(channel_id, message_id)
        if isinstance(message, web.Response):
            return message
        message.deleted = True
        return web.Response(status=204)

    async def _start_thread(self, request: web.Request, channel_id: str, message_id: str) -> web.Response:
        parent = self.channels.get(int(channel_id))
        if parent is None or parent.is_thread:
            return _error(400, 50024, "Cannot execute action on this channel type")
        message = self._channel_message(channel_id, message_id)
        if isinstance(message, web.Response):
            return message
        if int(message_id) in self.channels:
            return _error(400, 160004, "A thread has already been created for this message")
        body = request[JSON_BODY] or {}
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            return _error(400, 50035, "Invalid Form Body")
        thread = self.add_thread(parent, name, thread_id=message.id)
        thread.auto_archive_duration = int(body.get("auto_archive_duration") or 1440)
        payload = thread.payload()
        await self.dispatch("THREAD_CREATE", {**payload, "newly_created": True}, guild_id=thread.guild_id)
        return _json(payload)

    async def _get_channel(self, _r: web.Request, channel_id: str) -> web.Response:
        channel = self.channels.get(int(channel_id))
        return _error(404, 10003, "Unknown Channel") if channel is None else _json(channel.payload())

    async def _edit_channel(self, request: web.Request, channel_id: str) -> web.Response:
        channel = self.channels.get(int(channel_id))
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        body = request[JSON_BODY] or {}
        if channel.is_thread and channel.locked and body.get("archived") is False:
            return _error(403, 50013, "Missing Permissions")
        if "archived" in body:
            channel.archived = bool(body["archived"])
        if "locked" in body:
            channel.locked = bool(body["locked"])
        if "name" in body:
            channel.name = str(body["name"])
        payload = channel.payload()
        await self.dispatch(
            "THREAD_UPDATE" if channel.is_thread else "CHANNEL_UPDATE", payload, guild_id=channel.guild_id
        )
        return _json(payload)

    async def _typing(self, _r: web.Request, _channel_id: str) -> web.Response:
        return web.Response(status=204)

    # commands -------------------------------------------------------------------
    async def _get_commands(self, _r: web.Request, _app_id: str, guild_id: str | None = None) -> web.Response:
        return _json(self.commands.get(int(guild_id) if guild_id else None, []))

    async def _put_commands(
        self, request: web.Request, _app_id: str, guild_id: str | None = None
    ) -> web.Response:
        """Store commands the way Discord returns them: ids, versions, localizations, defaults filled in."""
        self.command_writes += 1
        problems = [problem for command in request[JSON_BODY] or [] for problem in _command_problems(command)]
        if problems:
            return _error(400, 50035, "Invalid Form Body", errors={"_problems": problems})
        stored = []
        for command in request[JSON_BODY] or []:
            permissions = command.get("default_member_permissions")
            stored.append(
                {
                    **_registered_shape(command),
                    "id": str(snowflake()),
                    "application_id": str(self.application_id),
                    "version": str(snowflake()),
                    "guild_id": guild_id,
                    "default_member_permissions": None if permissions is None else str(permissions),
                    "dm_permission": True,
                    "nsfw": command.get("nsfw", False),
                    "contexts": command.get("contexts") or [0, 1, 2],
                    "integration_types": command.get("integration_types") or [0],
                }
            )
        self.commands[int(guild_id) if guild_id else None] = stored
        return _json(stored)

    async def archive_thread(self, thread: FakeChannel, *, locked: bool = False) -> None:
        """A thread auto-archives (or a moderator archives and locks it); the bot gets THREAD_UPDATE."""
        thread.archived, thread.locked = True, locked
        await self.dispatch("THREAD_UPDATE", thread.payload(), guild_id=thread.guild_id)

    def expire_interaction(self, interaction: FakeInteraction) -> None:
        """The interaction token stops working (as after 15 minutes)."""
        interaction.expired = True


_COMMAND_NAME = re.compile(r"^[-_a-z0-9]{1,32}$")
_LIMIT = 25  # options per command or group, choices per option


def _command_problems(item: dict[str, Any], where: str = "") -> list[str]:
    """What Discord rejects in a slash command (or option) with 400 Invalid Form Body."""
    name = str(item.get("name", ""))
    path = f"{where}/{name}"
    problems = []
    if not _COMMAND_NAME.match(name):
        problems.append(f"{path}: name must be 1-32 lowercase letters, digits, - or _")
    if not 1 <= len(str(item.get("description", ""))) <= 100:
        problems.append(f"{path}: description must be 1-100 characters")
    options = item.get("options") or []
    if len(options) > _LIMIT or len(item.get("choices") or []) > _LIMIT:
        problems.append(f"{path}: at most {_LIMIT} options and {_LIMIT} choices")
    required = [bool(option.get("required")) for option in options]
    if required != sorted(required, reverse=True):
        problems.append(f"{path}: required options must come before optional ones")
    for option in options:
        problems += _command_problems(option, path)
    return problems


def _registered_shape(item: dict[str, Any]) -> dict[str, Any]:
    """Discord leaves out `required: false`, adds null localizations, and nests the same for options."""
    shaped = {key: value for key, value in item.items() if not (key == "required" and value is False)}
    shaped.setdefault("name_localizations", None)
    shaped.setdefault("description_localizations", None)
    if "options" in item:
        shaped["options"] = [_registered_shape(option) for option in item["options"]]
    if "choices" in item:
        shaped["choices"] = [{**choice, "name_localizations": None} for choice in item["choices"]]
    return shaped


def _too_long() -> web.Response:
    errors = {
        "content": {
            "_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]
        }
    }
    return _error(400, 50035, "Invalid Form Body", errors=errors)
