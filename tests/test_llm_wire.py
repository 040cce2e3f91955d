"""The wire to OpenAI-compatible endpoints: what odd but real providers send, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web

from core.llm import (
    ChatRequest,
    ErrorKind,
    LLMClient,
    LLMTimeouts,
    Outcome,
    RetryPolicy,
    StreamEnd,
    TextDelta,
)
from core.llm.sse import ServerEvent, SSEDecoder
from tests.fakes.openai_server import FakeOpenAI, StreamReply
from tests.fakes.openai_server import fake_openai as fake_openai  # the fixture


def chunk(content: str | None = None, finish: str | None = None, **fields: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    payload = {"model": "m-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **fields}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


@pytest.fixture
async def raw_provider() -> AsyncIterator[Callable[[Sequence[bytes], str], str]]:
    """Serve /v1/chat/completions with exactly the given body pieces; returns the base URL."""
    runners: list[web.AppRunner] = []

    async def start(pieces: Sequence[bytes], content_type: str = "text/event-stream") -> str:
        async def handler(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": content_type})
            await response.prepare(request)
            for piece in pieces:
                await response.write(piece)
                await asyncio.sleep(0.001)
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/v1"

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


async def reply(base_url: str) -> tuple[str, StreamEnd]:
    retry = RetryPolicy(max_attempts=1)
    async with LLMClient(api_key="sk-test", base_url=base_url, retry=retry) as client:
        request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
        events = [event async for event in client.stream(request)]
    *deltas, end = events
    assert isinstance(end, StreamEnd)
    return "".join(d.text for d in deltas if isinstance(d, TextDelta)), end


def test_decoder_joins_lines_split_across_reads_and_handles_crlf_comments_and_multiline_data() -> None:
    decoder = SSEDecoder()
    pieces = [b": keep-alive\r\n\r\nda", b'ta: {"a":', b" 1}\r\n\r\nevent: error\ndata: x\ndata: y\n", b"\n"]
    events = [event for piece in pieces for event in decoder.feed(piece)]
    assert events == [ServerEvent(b'{"a": 1}'), ServerEvent(b"x\ny", b"error")]
    decoder.feed(b"data: tail-without-blank-line")
    assert decoder.close() == [ServerEvent(b"tail-without-blank-line")]


async def test_a_stream_split_at_odd_places_keeps_every_character(raw_provider: Any) -> None:
    body = chunk("Héllo") + chunk(" wörld 🌍") + chunk(finish="stop") + b"data: [DONE]\n\n"
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]  # splits inside UTF-8 sequences too
    text, end = await reply(await raw_provider(pieces))
    assert text == "Héllo wörld 🌍"
    assert (end.outcome, end.finish_reason, end.model) == (Outcome.COMPLETE, "stop", "m-1")


async def test_an_error_object_inside_the_stream_after_text_keeps_the_text(raw_provider: Any) -> None:
    error = b'data: {"error": {"message": "overloaded", "code": "503"}}\n\n'
    text, end = await reply(await raw_provider([chunk("Partial"), error]))
    assert text == "Partial"
    assert end.outcome is Outcome.INTERRUPTED
    assert end.error is not None and end.error.status == 503
    assert end.notice == "⚠️ The model provider reported an error; the reply is incomplete."


async def test_malformed_json_before_any_text_fails_with_a_clear_note(raw_provider: Any) -> None:
    text, end = await reply(await raw_provider([b"data: {not json\n\n"]))
    assert text == ""
    assert end.outcome is Outcome.FAILED
    assert end.error is not None and end.error.kind is ErrorKind.PROVIDER_DOWN
    assert "malformed response" in (end.notice or "")


async def test_a_provider_that_ignores_stream_true_still_gets_its_answer_shown(raw_provider: Any) -> None:
    completion = {
        "model": "m-2",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Whole."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    text, end = await reply(await raw_provider([json.dumps(completion).encode()], "application/json"))
    assert text == "Whole."
    assert (end.outcome, end.model) == (Outcome.COMPLETE, "m-2")
    assert end.usage is not None and (end.usage.prompt_tokens, end.usage.completion_tokens) == (3, 2)


async def test_a_stream_ending_without_done_or_blank_line_is_complete(raw_provider: Any) -> None:
    last = chunk(" end", finish="stop").rstrip(b"\n")
    text, end = await reply(await raw_provider([chunk("The"), last]))
    assert text == "The end"
    assert end.outcome is Outcome.COMPLETE


async def test_coalesced_reads_lose_nothing_of_a_long_slow_stream(fake_openai: FakeOpenAI) -> None:
    words = [f"w{i}" for i in range(60)]
    fake_openai.enqueue(StreamReply.words(" ".join(words), chunk_delay=0.01))
    timeouts = LLMTimeouts(first_token=5, between_tokens=5, total=20)
    async with LLMClient(api_key="sk-test", base_url=fake_openai.base_url, timeouts=timeouts) as client:
        request = ChatRequest(model="m", messages=[{"role": "user", "content": "count"}])
        loop = asyncio.get_running_loop()
        arrivals: list[float] = []
        text = ""
        async for event in client.stream(request):
            if isinstance(event, TextDelta):
                arrivals.append(loop.time())
                text += event.text
    assert text == " ".join(words)
    # The first words come at once; later ones arrive in a few batches rather than 60 wake-ups.
    batches = len({round(t, 2) for t in arrivals})
    assert batches < len(words) / 2
