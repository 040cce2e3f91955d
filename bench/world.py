"""One bot process, one platform fake and the shared fake model: send mentions, wait, read the figures."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.platforms import BenchDiscord, BenchSlack, Sent, Write
from bench.procs import Bot, CpuMark, ModelProc
from bench.replies import answer, prompt

Platform = Literal["slack", "discord"]
FIRST_SCRAPE = 5.0  # s after the events: settle() asks the bot how many turns it finished
FIRST_WORD = "Answer"  # every answer starts with it (bench.replies.answer)


def expected_text(platform: Platform, tag: str) -> str:
    """The exact text the platform must show at the end."""
    if platform == "slack":
        from bots.slack.mrkdwn import to_mrkdwn  # the adapter's own Markdown → mrkdwn conversion

        return to_mrkdwn(answer(tag))
    return answer(tag)


@dataclass
class Reply:
    """What one mention turned into, measured from the fakes' records."""

    tag: str
    sent_at: float
    exact: bool
    placeholder: float | None = None  # s after the event: the first post (Discord /chat: the deferral)
    request: float | None = None  # s after the event: the model request arrived
    first_words: float | None = None  # s after the model's first chunk: first post/edit showing words
    complete: float | None = None  # s after the event: the post/edit that made the final text exact
    writes: int = 0
    request_bytes: int = 0
    request_messages: int = 0


@dataclass
class World:
    platform: Platform
    model: ModelProc
    fake: BenchSlack | BenchDiscord
    bot: Bot
    env: dict[str, str]
    sent: list[Sent] = field(default_factory=list)
    startup: float = 0.0

    @classmethod
    async def open(
        cls,
        platform: Platform,
        model: ModelProc,
        workdir: Path,
        database_url: str,
        *,
        env: dict[str, str] | None = None,
        name: str = "bot",
        fake: BenchSlack | BenchDiscord | None = None,
    ) -> World:
        """Start the platform fake (or use `fake`, not started yet) and the bot; wait until ready."""
        if fake is None:
            fake = BenchSlack() if platform == "slack" else BenchDiscord()
        if isinstance(fake, BenchSlack):
            await fake.start()
            platform_env = {
                "SLACK_BOT_TOKEN": fake.bot_token,
                "SLACK_SIGNING_SECRET": fake.signing_secret,
                "SLACK_API_URL": fake.api_url,
            }
        else:
            await fake.start()
            platform_env = {
                "DISCORD_TOKEN": fake.token,
                "DISCORD_API_URL": fake.api_url,
                "DISCORD_GATEWAY_URL": fake.gateway_url,
            }
        full_env = {**model.env(), "DATABASE_URL": database_url, **platform_env, **(env or {})}
        bot = Bot.spawn(full_env, workdir, name)
        try:
            startup = await bot.wait_ready()
        except BaseException:
            await bot.stop()
            await _close_fake(fake)
            raise
        if isinstance(fake, BenchSlack):
            fake.events_url = bot.url + "/slack/events"
        return cls(platform, model, fake, bot, full_env, startup=startup)

    async def close(self, grace: float = 20.0) -> int | None:
        code = await self.bot.stop(grace)
        await _close_fake(self.fake)
        return code

    # -- events ----------------------------------------------------------------------------------

    def channel_names(self) -> list[str]:
        if isinstance(self.fake, BenchSlack):
            return list(self.fake.channel_ids)
        return [str(c.id) for c in self.fake.text_channels]

    async def mention(
        self, tag: str, channel: int, *, thread: str | None = None, slash: bool = False, in_thread: Any = None
    ) -> Sent:
        """A mention in channel number `channel` (in the Slack thread `thread`, or the Discord thread
        `in_thread`), or Discord's `/chat` when `slash`."""
        text = prompt(tag)
        if in_thread is not None:
            assert isinstance(self.fake, BenchDiscord)
            sent = await self.fake.mention_in_thread(tag, text, thread=in_thread)
        elif isinstance(self.fake, BenchSlack):
            sent = await self.fake.mention(
                tag, text, channel=self.fake.channel_ids[channel], thread_ts=thread
            )
        elif slash:
            sent = await self.fake.slash_chat(tag, text, channel=self.fake.text_channels[channel])
        else:
            sent = await self.fake.mention(tag, text, channel=self.fake.text_channels[channel])
        self.sent.append(sent)
        return sent

    def exact(self, sent: Sent) -> bool:
        return self.fake.final_text(sent) == expected_text(self.platform, sent.tag)

    async def settle(self, sents: list[Sent], limit: float, turns_before: float | None = None) -> bool:
        """Wait until every reply shows its exact final text, or the bot finished as many turns as
        were sent (whatever became of them), or `limit` seconds; True when every text is exact."""
        deadline = time.monotonic() + limit
        # /metrics costs the bot ~1 ms of CPU: not before a normal reply (~3 s) is done, then rarely.
        next_scrape = time.monotonic() + FIRST_SCRAPE
        while time.monotonic() < deadline:
            if all(self.exact(sent) for sent in sents):
                return True
            if turns_before is not None and time.monotonic() >= next_scrape:
                next_scrape = time.monotonic() + 2.0
                done = await self.bot.turns_done()
                if done is not None and done - turns_before >= len(sents):
                    await asyncio.sleep(0.5)  # the last final edits are answered by now
                    return all(self.exact(sent) for sent in sents)
            await asyncio.sleep(0.1)
        return all(self.exact(sent) for sent in sents)

    # -- figures ---------------------------------------------------------------------------------

    async def replies(self, sents: list[Sent], records: list[dict[str, Any]] | None = None) -> list[Reply]:
        records = records if records is not None else await self.model.records()
        by_tag = {record["tag"]: record for record in records if record.get("tag")}
        index = self.fake.writes_index()
        out = []
        for sent in sents:
            expected = expected_text(self.platform, sent.tag)
            writes: list[Write] = [w for w in self.fake.reply_writes(sent, index) if w.at >= sent.at]
            reply = Reply(sent.tag, sent.at, self.fake.final_text(sent) == expected, writes=len(writes))
            if writes:
                reply.placeholder = writes[0].at - sent.at
            record = by_tag.get(sent.tag)
            if record is not None:
                reply.request = record["arrived"] - sent.at
                reply.request_bytes = int(record["bytes"])
                reply.request_messages = int(record["messages"])
                shown = next((w for w in writes if FIRST_WORD in w.text), None)
                if shown is not None and record.get("first_chunk"):
                    reply.first_words = shown.at - record["first_chunk"]
            final = next((w for w in writes if w.text == expected), None)
            if final is not None and reply.exact:
                reply.complete = final.at - sent.at
            out.append(reply)
        return out

    def cpu(self) -> CpuMark:
        return self.bot.cpu()


async def _close_fake(fake: BenchSlack | BenchDiscord) -> None:
    if isinstance(fake, BenchSlack):
        await fake.close()
    else:
        await fake.close()
