"""The conversation engine end to end: fake OpenAI server, fake surface, real database."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from sqlalchemy import event, func, select

from core.app import Core
from core.conversations import HISTORY_BATCH
from core.engine import Turn
from core.storage.models import MessageRow
from core.tokens import count_message_tokens
from core.types import Author, ConversationKey
from tests.fakes.openai_server import ErrorReply, FakeOpenAI, StreamReply
from tests.fakes.surface import FAST_LIMITS, FakeSurface

KEY = ConversationKey("slack", "T1", "C1", "1700000000.000100")
ADA = Author("U1", "Ada")
BOB = Author("U2", "Bob")


async def messages(core: Core, key: ConversationKey = KEY) -> list[MessageRow]:
    from core.storage.models import ConversationRow

    async with core.db.session() as session:
        rows = await session.scalars(
            select(MessageRow)
            .join(ConversationRow)
            .where(ConversationRow.thread == key.thread, ConversationRow.channel == key.channel)
            .order_by(MessageRow.id)
        )
        return list(rows.all())


async def say(
    core: Core, text: str, author: Author = ADA, key: ConversationKey = KEY
) -> tuple[FakeSurface, str]:
    surface = FakeSurface()
    result = await core.engine.handle_turn(Turn(key, author, text, platform_message_id="ev1"), surface)
    return surface, result.status


async def test_a_turn_is_streamed_exactly_and_stored_with_everything(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    answer = "Hello Ada! Here is a list:\n\n- one\n- two\n\n```python\nprint('hi')\n```"
    fake_openai.enqueue(StreamReply.words(answer, usage=(42, 17), chunk_delay=0.005))
    surface, status = await say(core, "Say hello")
    assert status == "complete"
    assert surface.history["m0"][0] == surface.limits.placeholder
    assert surface.final_texts() == [answer]

    user, reply = await messages(core)
    assert (user.role, user.content, user.author_id, user.author_name, user.status) == (
        "user",
        "Ada: Say hello",
        "U1",
        "Ada",
        "complete",
    )
    # Stored counts may be upper bounds (no tokenizer needed while everything fits), never less.
    assert user.token_count >= count_message_tokens("user", "Ada: Say hello", "gpt-4o-mini")
    assert user.source_message_id == "ev1"
    assert (reply.role, reply.content, reply.status, reply.finish_reason) == (
        "assistant",
        answer,
        "complete",
        "stop",
    )
    assert (reply.prompt_tokens, reply.completion_tokens, reply.model) == (42, 17, "gpt-4o-mini")
    assert reply.token_count >= count_message_tokens("assistant", answer, "gpt-4o-mini")
    assert reply.platform_message_ids == ["m0"]
    assert reply.latency_ms is not None and reply.first_token_ms is not None
    assert reply.latency_ms >= reply.first_token_ms >= 0
    request = fake_openai.requests[0]
    assert request["model"] == "gpt-4o-mini" and request["stream"] is True
    assert request["messages"][0]["role"] == "system"
    assert request["messages"][-1] == {"role": "user", "content": "Ada: Say hello"}


class _LoggedSurface(FakeSurface):
    """Notes in `log` when each post is asked for, before any of its work."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self._log = log

    async def post(self, text: str) -> str:
        self._log.append("post")
        return await super().post(text)


async def test_the_placeholder_is_asked_for_before_the_turn_touches_the_database(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    log: list[str] = []

    def statement(*_args: object) -> None:
        log.append("statement")

    event.listen(core.db.engine.sync_engine, "before_cursor_execute", statement)
    try:
        fake_openai.enqueue(StreamReply.words("Hi there", chunk_delay=0.0))
        surface = _LoggedSurface(log)
        result = await core.engine.handle_turn(Turn(KEY, ADA, "Hello", platform_message_id="ev2"), surface)
    finally:
        event.remove(core.db.engine.sync_engine, "before_cursor_execute", statement)
    assert result.status == "complete" and surface.final_texts() == ["Hi there"]
    assert log[0] == "post" and "statement" in log


async def test_history_speakers_and_isolation(core: Core, fake_openai: FakeOpenAI) -> None:
    await say(core, "I am Ada")
    await say(core, "And I am Bob", author=BOB)
    other = ConversationKey("slack", "T1", "C2", "1.0")
    await say(core, "secret in another channel", key=other)
    await say(core, "Who are we?")
    fourth = fake_openai.requests[3]["messages"]
    contents = [m["content"] for m in fourth]
    assert contents[1:] == [
        "Ada: I am Ada",
        "Echo: Ada: I am Ada",
        "Bob: And I am Bob",
        "Echo: Bob: And I am Bob",
        "Ada: Who are we?",
    ]
    assert not any("secret" in c for c in contents)
    assert len(fake_openai.requests[2]["messages"]) == 2


async def test_reset_forgets_history_but_keeps_rows(core: Core, fake_openai: FakeOpenAI) -> None:
    await say(core, "remember 42")
    assert await core.engine.has_conversation(KEY)
    assert await core.engine.reset_conversation(KEY) is True
    assert await core.engine.reset_conversation(KEY) is False
    await say(core, "what number?")
    assert [m["role"] for m in fake_openai.requests[1]["messages"]] == ["system", "user"]
    assert len(await messages(core)) == 4


async def test_message_too_long_alone_is_refused_without_calling_the_provider(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    await core.personas.set_channel("slack", "T1", "C1", None)
    from core.personas.model import Persona

    small = Persona.validate_data(
        {
            "name": "small",
            "system_prompt": "Be brief.",
            "model": "gpt-4o-mini",
            "context_window": 2048,
            "max_tokens": 500,
        }
    )
    await core.personas.create(small)
    await core.personas.set_channel("slack", "T1", "C1", "small")
    surface, status = await say(core, "word " * 3000)
    assert status == "refused"
    assert fake_openai.requests == []
    [text] = surface.final_texts()
    assert "3,00" in text and "tokens long" in text and "at most 1,4" in text
    user, reply = await messages(core)
    assert (user.status, reply.status) == ("refused", "refused")
    # The refused message never enters a later context.
    await say(core, "short now")
    assert [m["role"] for m in fake_openai.requests[0]["messages"]] == ["system", "user"]


async def test_history_that_fits_only_by_exact_count_is_sent_whole(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    from core.personas.model import Persona

    small = {"name": "small", "system_prompt": "Be brief.", "model": "gpt-4o-mini", "context_window": 2048}
    await core.personas.create(Persona.validate_data(small))
    await core.personas.set_channel("slack", "T1", "C1", "small")
    # ~600 bytes but ~100 tokens each: by bytes only ~2 of them fit the 1,472-token prompt budget.
    earlier = [f"turn {i}: " + "hello " * 100 for i in range(5)]
    for text in earlier:
        await say(core, text)
    await say(core, "and now?")
    sent = fake_openai.requests[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [f"Ada: {t}" for t in earlier] + [
        "Ada: and now?"
    ]
    await say(core, "once more " * 200)  # now the budget really is short: trimmed by exact counts
    sent = [(m["role"], m["content"]) for m in fake_openai.requests[-1]["messages"]]
    stored = [(row.role, row.content) for row in await messages(core)][:-2]  # without the newest turn
    kept = sent[1:-1]
    assert 0 < len(kept) < len(stored) and stored[-len(kept) :] == kept  # the newest tail, contiguous

    def tokens(messages: list[tuple[str, str]]) -> int:
        return sum(count_message_tokens(role, content, "gpt-4o-mini") for role, content in messages)

    budget = 2048 - 512 - 64
    assert tokens(sent) + 3 <= budget < tokens(sent) + 3 + tokens([stored[-len(kept) - 1]])


async def test_context_length_error_trims_harder_and_retries_once(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    for i in range(6):
        await say(core, f"message {i} " + "lorem ipsum " * 20)
    fake_openai.enqueue(ErrorReply.context_length_exceeded())
    from core.personas.model import Persona

    await core.personas.create(
        Persona.validate_data(
            {
                "name": "tight",
                "system_prompt": "x",
                "model": "gpt-4o-mini",
                "context_window": 1400,
                "max_tokens": 100,
            }
        )
    )
    await core.personas.set_channel("slack", "T1", "C1", "tight")
    surface, status = await say(core, "final question")
    assert status == "complete"
    first, second = fake_openai.requests[-2:]
    assert len(second["messages"]) < len(first["messages"])
    assert second["messages"][-1]["content"] == "Ada: final question"
    assert surface.final_texts() == ["Echo: Ada: final question"]


@pytest.mark.parametrize(
    ("reply", "status", "notice"),
    [
        (StreamReply.words("A long answer", finish_reason="length"), "cut", "cut at"),
        (StreamReply.words("Something bad", finish_reason="content_filter"), "filtered", "filter"),
        (StreamReply.words("Half of it and", cut_after=3), "interrupted", "incomplete"),
    ],
)
async def test_endings_are_visible_and_stored(
    core: Core, fake_openai: FakeOpenAI, reply: StreamReply, status: str, notice: str
) -> None:
    fake_openai.enqueue(reply)
    surface, got = await say(core, "go")
    assert got == status
    [text] = surface.final_texts()
    shown = "".join(reply.chunks[: reply.cut_after]) if reply.cut_after else reply.text
    assert text.startswith(shown) and notice in text.lower()
    [_, row] = await messages(core)
    assert (row.status, row.content) == (status, shown)


async def test_failure_before_any_token_replaces_placeholder_and_history_stays_usable(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(ErrorReply.invalid_api_key())
    surface, status = await say(core, "hello?")
    assert status == "failed"
    [text] = surface.final_texts()
    assert "API key" in text and "error id" in text and surface.limits.placeholder not in text
    user, reply = await messages(core)
    assert (user.status, reply.status, reply.error_kind, reply.content) == ("complete", "failed", "auth", "")
    assert reply.error_id and reply.error_id in text
    _, status = await say(core, "again")
    assert status == "complete"
    assert [m["content"] for m in fake_openai.requests[-1]["messages"][1:]] == ["Ada: hello?", "Ada: again"]


async def test_json_mode_shows_a_code_block_and_flags_invalid_json(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    await core.personas.set_channel("slack", "T1", "C1", "extractor")
    fake_openai.enqueue(
        StreamReply(chunks=['{"name": ', '"Bob", ', '"age": 41}']), StreamReply(chunks=["{not json"])
    )
    surface, _ = await say(core, "Bob is 41")
    assert fake_openai.requests[0]["response_format"] == {"type": "json_object"}
    assert surface.final_texts() == ['```json\n{"name": "Bob", "age": 41}\n```']
    surface, _ = await say(core, "again")
    [text] = surface.final_texts()
    assert text.startswith("```json\n{not json\n```") and "not valid JSON" in text
    rows = await messages(core)
    assert rows[1].content == '{"name": "Bob", "age": 41}'


async def test_turns_in_one_conversation_are_serialised_others_run_concurrently(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(StreamReply.words("first answer", first_delay=0.3))
    a = asyncio.create_task(say(core, "one"))
    await fake_openai.wait_for_requests(1)
    b = asyncio.create_task(say(core, "two"))
    c = asyncio.create_task(say(core, "elsewhere", key=ConversationKey("slack", "T1", "C9", "9")))
    await fake_openai.wait_for_requests(2)  # the other conversation did not wait
    assert fake_openai.requests[1]["messages"][-1]["content"] == "Ada: elsewhere"
    await asyncio.gather(a, b, c)
    third = [m["content"] for m in fake_openai.requests[2]["messages"]]
    assert third[-3:] == ["Ada: one", "first answer", "Ada: two"]


async def test_deleted_placeholder_stops_generation_and_keeps_what_was_produced(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    fake_openai.enqueue(StreamReply.words(words, chunk_delay=0.01))
    surface = FakeSurface()
    task = asyncio.create_task(core.engine.handle_turn(Turn(KEY, ADA, "long please"), surface))
    while not surface.edits():
        await asyncio.sleep(0.01)
    surface.delete("m0")
    result = await asyncio.wait_for(task, 5)
    assert result.status == "stopped"
    await fake_openai.wait_for_disconnects(1)
    [_, row] = await messages(core)
    assert row.status == "stopped" and 0 < len(row.content) < len(words)
    assert words.startswith(row.content)


def _old_turns(conversation_id: int, count: int) -> list[dict[str, Any]]:
    """Rows of `count` complete turns ("old 0", "old 1", ...), alternating user and assistant."""
    return [
        {
            "conversation_id": conversation_id,
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"old {i}",
            "token_count": 7,
            "token_encoding": "o200k_base",
            "status": "complete",
            "platform_message_ids": [],
        }
        for i in range(count)
    ]


async def test_history_limit_and_long_history_reads_only_the_tail(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    from core.personas.model import Persona

    await core.personas.create(
        Persona.validate_data(
            {"name": "short-memory", "system_prompt": "x", "model": "gpt-4o-mini", "history_limit": 4}
        )
    )
    await core.personas.set_channel("slack", "T1", "C1", "short-memory")
    await say(core, "seed")
    conversation_id = (await messages(core))[0].conversation_id
    rows = _old_turns(conversation_id, 5000)
    async with core.db.transaction() as session:
        await session.execute(MessageRow.__table__.insert(), rows)
        total = await session.scalar(select(func.count()).select_from(MessageRow))
    assert total == 5002
    await say(core, "latest")
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"]]
    assert sent == ["x", "old 4996", "old 4997", "old 4998", "old 4999", "Ada: latest"]


async def test_history_over_several_batches_reaches_the_model_whole_and_in_order(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    """The newest batch is read with the conversation's opening, the older ones after it."""
    await say(core, "seed")
    [seed_user, seed_reply] = await messages(core)
    rows = _old_turns(seed_user.conversation_id, 2 * HISTORY_BATCH + 21)
    async with core.db.transaction() as session:
        await session.execute(MessageRow.__table__.insert(), rows)
    await say(core, "latest")
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"]][1:]
    assert sent == [seed_user.content, seed_reply.content, *(row["content"] for row in rows), "Ada: latest"]


async def test_an_empty_message_gets_a_hint_without_calling_the_model(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    surface, status = await say(core, "   ")
    assert status == "refused" and fake_openai.requests == []
    assert surface.final_texts() == ["👋 I'm here. Write your question in the same message as the mention."]


async def test_a_lone_reply_shows_fresh_text_at_each_edit_and_its_end_within_one_interval(
    core: Core, fake_openai: FakeOpenAI
) -> None:
    """Reads of the model's stream are held until just before each edit: an edit never shows text
    more than about one interval old, and the final text follows the model's end within one interval."""
    interval, delay, words = 0.4, 0.04, 30
    answer = " ".join(f"w{i}" for i in range(words))
    fake_openai.enqueue(StreamReply.words(answer, chunk_delay=delay))
    surface = FakeSurface(dataclasses.replace(FAST_LIMITS, min_edit_interval=interval))
    started = time.monotonic()
    result = await core.engine.handle_turn(Turn(KEY, ADA, "Count", platform_message_id="ev1"), surface)
    assert result.status == "complete"
    assert surface.final_texts() == [answer]
    edits = [call for call in surface.calls if call.kind == "edit" and call.ok]
    final_at = next(call.ended for call in edits if call.text == answer)
    model_end = started + words * delay
    assert final_at - model_end < interval + 0.3  # 0.3 s: the model's first token, a slow CI machine
    progress = [call for call in edits if call.text != answer and "w" in call.text]
    assert len(progress) >= 2
    for call in progress:
        shown = call.text.count("w")
        sent_before = (call.started - started) / delay - 1  # words the model had sent by then, about
        assert shown >= sent_before - interval / delay - 3  # at most one interval behind (+3 words)
