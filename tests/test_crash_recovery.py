"""A `threadline run` process killed in the middle of a streamed reply (SIGKILL: no shutdown code runs).

At the next start the reply must not stay half-written forever: the Slack message is edited to end
with the interruption note, the stored reply is marked "interrupted", and the thread keeps working.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.config import async_database_url
from core.scheduler import INTERRUPTED_NOTICE
from core.storage.database import Database
from core.storage.models import ConversationRow, MessageRow
from tests.fakes.openai_server import FakeOpenAI, StreamReply, clear_proxy_env
from tests.fakes.slack_server import FakeSlack, Message
from tests.slack_process import SlackService

BOT = "<@UBOT>"
LONG = " ".join(f"w{i}" for i in range(600))  # 30 s at 0.05 s a word: far longer than the test
RECOVERY_AFTER = 1.0
LEASE = 2.0
WAIT = 20.0


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _reply_row(db: Database) -> tuple[MessageRow, ConversationRow]:
    async with db.session() as session:
        row = (
            await session.execute(
                select(MessageRow, ConversationRow)
                .join(ConversationRow, MessageRow.conversation_id == ConversationRow.id)
                .where(MessageRow.role == "assistant")
                .order_by(MessageRow.id)
            )
        ).first()
    assert row is not None
    return row[0], row[1]


async def _wait_for_checkpoint(db: Database) -> None:
    """Until the streaming reply's text was saved at least once (the engine checkpoints every 2 s)."""
    async with asyncio.timeout(WAIT):
        while True:
            async with db.session() as session:
                content = await session.scalar(
                    select(MessageRow.content).where(
                        MessageRow.role == "assistant", MessageRow.status == "streaming"
                    )
                )
            if content:
                return
            await asyncio.sleep(0.1)


async def test_a_reply_cut_by_a_crash_is_finalised_at_the_next_start(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxy_env(monkeypatch)
    db = Database(async_database_url(database_url))
    async with FakeOpenAI() as llm, FakeSlack() as slack:
        service = SlackService(
            tmp_path / "service",
            database_url=database_url,
            slack=slack,
            llm=llm,
            THREADLINE_RECOVERY_AFTER_SECONDS=str(RECOVERY_AFTER),
            THREADLINE_LEASE_SECONDS=str(LEASE),
        )
        try:
            llm.enqueue(StreamReply.words(LONG, chunk_delay=0.05))
            await service.start()
            await service.wait_ready()
            slack.events_url = service.events_url
            message = slack.message_event(f"{BOT} tell me a long story")
            await slack.deliver_event(slack.mention_event(message))
            thread = str(message["ts"])

            def reply() -> Message | None:
                found = [m for m in slack.thread("C0001", thread) if m.user == slack.bot_user_id]
                return found[0] if found else None

            # The reply is streaming: a few edits are visible and its text was saved once.
            await slack.wait_until(lambda: (r := reply()) is not None and len(r.versions) >= 3, limit=WAIT)
            await _wait_for_checkpoint(db)
            await service.kill()

            shown = reply()
            assert shown is not None and not shown.text.endswith(INTERRUPTED_NOTICE)
            saved, conversation = await _reply_row(db)
            assert saved.status == "streaming" and saved.content and LONG.startswith(saved.content)
            # The dead process's lease and the recovery window must be over before the restart.
            assert conversation.lease_expires_at is not None
            over = max(
                _aware(conversation.lease_expires_at),
                _aware(saved.created_at) + timedelta(seconds=RECOVERY_AFTER),
            )
            await asyncio.sleep(max(0.0, (over - datetime.now(UTC)).total_seconds()) + 0.1)

            await service.start()
            await service.wait_ready()
            slack.events_url = service.events_url
            await slack.wait_until(lambda: shown.text.endswith(INTERRUPTED_NOTICE), limit=WAIT)
            assert shown.text == f"{saved.content}\n\n{INTERRUPTED_NOTICE}"
            recovered, _ = await _reply_row(db)
            assert recovered.status == "interrupted"

            # The thread is still a working conversation.
            follow_up = slack.message_event(f"{BOT} are you back?", thread_ts=thread)
            await slack.deliver_event(slack.mention_event(follow_up))
            await slack.wait_until(
                lambda: (
                    [m.text for m in slack.thread("C0001", thread) if m.user == slack.bot_user_id][-1]
                    == "Echo: Alice Liddell: are you back?"
                ),
                limit=WAIT,
            )
            assert await service.terminate(30) == 0
        finally:
            await service.kill()
            await db.aclose()
