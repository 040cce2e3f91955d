"""The test fakes of Slack and Discord, with the platforms' rate limits (bench/limits.py) enforced.

They run in the bench's own process (never the bot's): they send the events, timestamp them, and
record every call the bot makes, which is what the figures are computed from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bench.limits import Limiter, discord_check, slack_check
from tests.fakes.discord_payloads import FakeChannel, FakeGuild, FakeUser
from tests.fakes.discord_server import API_PREFIX, FakeDiscord
from tests.fakes.slack_server import FakeSlack

HISTORY_METHODS = ("conversations.replies", "conversations.history")


@dataclass
class Sent:
    """One mention (or slash command) the bench sent, and when."""

    tag: str
    key: str  # Slack: "channel/ts" of the mention; Discord: the message or interaction id
    channel: str
    at: float  # time.monotonic() just before the event left the fake
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Write:
    """A post or edit of the bot that the platform accepted."""

    at: float
    text: str
    kind: str  # post | edit | callback


# --------------------------------------------------------------------------- Slack


class BenchSlack(FakeSlack):
    def __init__(self, *, channels: int = 10) -> None:
        super().__init__()
        self.limiter = Limiter()
        self.channel_ids = [f"C{index:04d}" for index in range(1, channels + 1)]
        self.rejected_at: list[tuple[float, str]] = []
        self._mentions: dict[tuple[str, str], list[str]] = {}  # mention ts by (channel, thread)

    async def start(self) -> None:
        await super().start()
        # Hundreds of deliveries at once must not queue behind aiohttp's default 100 connections.
        assert self._session is not None
        await self._session.close()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    def _scripted_failure(self, method: str, args: dict[str, Any]) -> web.Response | None:
        scripted = super()._scripted_failure(method, args)
        if scripted is not None:
            return scripted
        retry_after = slack_check(self.limiter, method, self.team_id, str(args.get("channel") or ""))
        if retry_after > 0:
            self.rejected_at.append((time.monotonic(), method))
            return self._error("ratelimited", status=429, headers={"Retry-After": f"{retry_after:g}"})
        return None

    async def mention(self, tag: str, text: str, *, channel: str, thread_ts: str | None = None) -> Sent:
        """A person mentions the bot: Slack's `app_mention` and `message` events for one message."""
        message = self.message_event(f"<@{self.bot_user_id}> {text}", channel=channel, thread_ts=thread_ts)
        sent = Sent(tag, f"{channel}/{message['ts']}", channel, time.monotonic())
        sent.extra.update(thread=thread_ts or message["ts"], ts=message["ts"])
        self._mentions.setdefault((channel, sent.extra["thread"]), []).append(message["ts"])
        await self.deliver_event(self.mention_event(message))
        await self.deliver_event(message)
        return sent

    def writes_index(self) -> dict[str, list[Write]]:
        """Accepted posts and edits of the bot, by message ("channel/ts"), in order."""
        index: dict[str, list[Write]] = {}
        posts: dict[tuple[str, str], list[Write]] = {}  # by (channel, thread_ts), in order
        for call in self.calls:
            if call.error is not None:
                continue
            channel = str(call.args.get("channel") or "")
            text = str(call.args.get("text") or "")
            if call.method == "chat.postMessage":
                posts.setdefault((channel, str(call.args.get("thread_ts") or "")), []).append(
                    Write(call.at, text, "post")
                )
            elif call.method == "chat.update":
                index.setdefault(f"{channel}/{call.args.get('ts')}", []).append(Write(call.at, text, "edit"))
        # The n-th accepted post in a thread created the n-th message of the bot there.
        for (channel, thread), writes in posts.items():
            mine = [m for m in self.thread(channel, thread) if m.user == self.bot_user_id] if thread else []
            for message, write in zip(mine, writes, strict=False):
                index.setdefault(f"{channel}/{message.ts}", []).insert(0, write)
        return index

    def _turn_messages(self, sent: Sent) -> list[str]:
        """The bot's messages answering this mention: after it, before the next one in its thread."""
        thread = sent.extra["thread"]
        after = float(sent.extra["ts"])
        later = [float(ts) for ts in self._mentions.get((sent.channel, thread), []) if float(ts) > after]
        before = min(later, default=float("inf"))
        return [
            m.ts
            for m in self.thread(sent.channel, thread)
            if m.user == self.bot_user_id and after < float(m.ts) < before
        ]

    def reply_writes(self, sent: Sent, index: dict[str, list[Write]]) -> list[Write]:
        writes = [w for ts in self._turn_messages(sent) for w in index.get(f"{sent.channel}/{ts}", [])]
        return sorted(writes, key=lambda w: w.at)

    def final_text(self, sent: Sent) -> str | None:
        """What the reply shows now (its parts joined), or None when nothing was posted."""
        turn = set(self._turn_messages(sent))
        parts = [
            m.text for m in self.thread(sent.channel, sent.extra["thread"]) if m.ts in turn and not m.deleted
        ]
        return "\n".join(parts) if parts else None

    def history_reads(self) -> int:
        return sum(1 for call in self.calls if call.method in HISTORY_METHODS)

    def count_429(self) -> int:
        return self.limiter.total_rejected


# --------------------------------------------------------------------------- Discord


class BenchDiscord(FakeDiscord):
    def __init__(self, *, channels: int = 10) -> None:
        super().__init__()
        self.limiter = Limiter()
        self.rejected_at: list[tuple[float, str, str, bool]] = []
        self.guild: FakeGuild = self.add_guild("Bench Guild")
        self.text_channels: list[FakeChannel] = [
            self.add_channel(self.guild, f"bench-{index}") for index in range(1, channels + 1)
        ]
        self.person: FakeUser = self.user("Alice")

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await FakeDiscord._middleware(self, request, handler)
        path = request.path[len(API_PREFIX) :]
        decision = discord_check(self.limiter, request.method, path)
        if decision.retry_after > 0:
            self.rejected_at.append((time.monotonic(), request.method, path, decision.is_global))
            retry = round(decision.retry_after, 3)
            headers = {**decision.headers, "Retry-After": str(max(1, math.ceil(retry))), "Via": "1.1 google"}
            body = {
                "message": "You are being rate limited.",
                "retry_after": retry,
                "global": decision.is_global,
            }
            return _json_response(body, 429, headers)
        response = await FakeDiscord._middleware(self, request, handler)
        response.headers.update(decision.headers)
        return response

    async def mention(self, tag: str, text: str, *, channel: FakeChannel) -> Sent:
        content = f"<@{self.bot.id}> {text}"
        at = time.monotonic()
        message = await self.send_message(channel, self.person, content, mentions=[self.bot])
        return Sent(tag, str(message.id), str(channel.id), at, {"kind": "mention"})

    async def mention_in_thread(self, tag: str, text: str, *, thread: FakeChannel) -> Sent:
        """A mention in a thread the bot already talks in (the conversation goes on)."""
        content = f"<@{self.bot.id}> {text}"
        at = time.monotonic()
        message = await self.send_message(thread, self.person, content, mentions=[self.bot])
        return Sent(tag, str(message.id), str(thread.id), at, {"kind": "thread", "thread": thread.id})

    async def slash_chat(self, tag: str, text: str, *, channel: FakeChannel) -> Sent:
        options = [{"name": "prompt", "type": 3, "value": text}]
        at = time.monotonic()
        interaction = await self.run_command(channel, self.person, "chat", options)
        return Sent(
            tag, str(interaction.id), str(channel.id), at, {"kind": "interaction", "token": interaction.token}
        )

    def writes_index(self) -> dict[str, list[Write]]:
        """Accepted writes of the bot, by channel or thread id ("c:ID"), message id ("m:ID"),
        message replied to ("r:ID") and interaction token ("t:TOKEN"), in order."""
        index: dict[str, list[Write]] = {}
        for request in self.requests:
            if not 200 <= request.status < 300 or not isinstance(request.json, dict):
                continue
            parts = request.path.strip("/").split("/")
            if parts[0] == "interactions" and len(parts) >= 3:
                content = str((request.json.get("data") or {}).get("content") or "")
                index.setdefault(f"t:{parts[2]}", []).append(Write(request.time, content, "callback"))
            elif parts[0] == "webhooks" and len(parts) >= 3 and "content" in request.json:
                kind = "edit" if request.method == "PATCH" else "post"
                index.setdefault(f"t:{parts[2]}", []).append(
                    Write(request.time, str(request.json["content"]), kind)
                )
            elif parts[0] == "channels" and "content" in request.json:
                write = Write(request.time, str(request.json["content"]), "post")
                if request.method == "PATCH" and len(parts) == 4:
                    write.kind = "edit"
                    index.setdefault(f"m:{parts[3]}", []).append(write)
                elif request.method == "POST" and len(parts) == 3 and parts[2] == "messages":
                    index.setdefault(f"c:{parts[1]}", []).append(write)
                    reference = (request.json.get("message_reference") or {}).get("message_id")
                    if reference:
                        index.setdefault(f"r:{reference}", []).append(write)
        return index

    def _reply_messages(self, sent: Sent) -> tuple[list[int], list[str]]:
        """The bot's messages holding the reply (in order), and the index keys of the writes to them."""
        bot = self.bot.id
        if sent.extra["kind"] == "thread":  # this turn's messages: posted after the mention
            thread_id = int(sent.extra["thread"])
            ids = sorted(
                m.id
                for m in self.messages.values()
                if m.channel_id == thread_id and m.author.id == bot and m.id > int(sent.key)
            )
            return ids[:1], [f"m:{i}" for i in ids[:1]]
        if sent.extra["kind"] == "mention":
            thread_id = int(sent.key)  # the thread opened on the mention has the mention's id
            ids = sorted(
                m.id for m in self.messages.values() if m.channel_id == thread_id and m.author.id == bot
            )
            keys = [f"c:{thread_id}"]
            if not ids:  # answered inline: a reply to the mention, or (its reference lost) by its words
                marker = f"Answer {sent.tag}:"
                ids = sorted(
                    m.id
                    for m in self.messages.values()
                    if m.author.id == bot
                    and m.channel_id == int(sent.channel)
                    and (m.reference == thread_id or marker in m.content)
                )
                keys = [f"r:{thread_id}"]
            return ids, keys + [f"m:{i}" for i in ids]
        interaction = self.interactions[int(sent.key)]
        ids = [interaction.original_id] if interaction.original_id else []
        keys = [f"t:{interaction.token}"]
        if interaction.original_id in self.channels:  # continuation parts in the thread opened on it
            thread_id = interaction.original_id
            more = sorted(
                m.id for m in self.messages.values() if m.channel_id == thread_id and m.author.id == bot
            )
            ids += more
            keys += [f"c:{thread_id}", *(f"m:{i}" for i in more)]
        return ids, keys

    def reply_writes(self, sent: Sent, index: dict[str, list[Write]]) -> list[Write]:
        _, keys = self._reply_messages(sent)
        writes = [w for key in dict.fromkeys(keys) for w in index.get(key, [])]
        return sorted(writes, key=lambda w: w.at)

    def final_text(self, sent: Sent) -> str | None:
        ids, _ = self._reply_messages(sent)
        parts = [self.messages[i].content for i in ids if not self.messages[i].deleted]
        return "\n".join(parts) if parts else None

    def history_reads(self) -> int:
        return sum(
            1
            for r in self.requests
            if r.method == "GET"
            and r.path.rstrip("/").endswith("/messages")
            and r.path.startswith("/channels/")
        )

    def count_429(self) -> int:
        return self.limiter.total_rejected


def _replies_to(body: dict[str, Any], message_id: str) -> bool:
    reference = body.get("message_reference") or {}
    return str(reference.get("message_id")) == message_id


def _json_response(data: Any, status: int, headers: dict[str, str]) -> web.Response:
    import json

    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **headers}
    )
