"""The wire to OpenAI-compatible endpoints: what odd but real providers send, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import aiohttp
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
from core.llm.failures import MalformedResponse, ProviderFailure, ProviderStatusError
from core.llm.sse import ServerEvent, SSEDecoder
from core.llm.wire import ChunkStream, OpenAIWire
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


class ScriptedBody:
    """A response whose body arrives in exactly the given reads, so a test decides what one read brings."""

    def __init__(self, reads: Sequence[bytes]) -> None:
        self._reads = list(reads)
        self.content = self
        self.connection = None

    async def readany(self) -> bytes:
        return self._reads.pop(0) if self._reads else b""

    def close(self) -> None:
        pass


def scripted(*reads: bytes) -> ChunkStream:
    return ChunkStream(cast(aiohttp.ClientResponse, ScriptedBody(reads)))


async def batches(stream: ChunkStream) -> list[object]:
    """What each next_chunks call gave, until the end: a list of chunks, or the error's type."""
    results: list[object] = []
    while True:
        try:
            chunks = await stream.next_chunks()
        except ProviderFailure as exc:
            results.append(type(exc))
            continue
        if chunks is None:
            return results
        results.append(chunks)


def content(text: str) -> dict[str, Any]:
    return json.loads(chunk(text)[len(b"data: ") :])  # type: ignore[no-any-return]


async def test_one_read_of_many_chunks_parses_each_exactly_as_json_loads() -> None:
    datas = [
        b'{"choices":[{"index":0,"delta":{"content":"h\\u00e9 \xf0\x9f\x8c\x8d"},"finish_reason":null}]}',
        b'{"n": 1.5e300, "big": 123456789012345678901234567890, "nan": NaN, "u": "\\ud83c\\udf0d"}',
        b' {"padded": true} ',  # json.loads allows the spaces
        b'\xef\xbb\xbf{"bom": 1}',  # and a UTF-8 byte order mark
        b'{"error": null, "choices": []}',
        b"{}",
    ]
    body = b"".join(b"data: " + data + b"\n\n" for data in datas) + b"data: [DONE]\n\n"
    (got,) = await batches(scripted(body))
    assert repr(got) == repr([json.loads(data) for data in datas])  # repr: NaN != NaN


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
async def test_chunks_split_across_reads_at_any_byte_are_those_of_one_read(newline: bytes) -> None:
    body = chunk("Héllo") + chunk(" wörld 🌍") + b": ping\n\n" + chunk(finish="stop")
    body = body.replace(b"\n", newline)
    whole = [content("Héllo"), content(" wörld 🌍"), json.loads(chunk(finish="stop")[6:])]
    assert await batches(scripted(body + b"data: [DONE]\n\n")) == [whole]
    for at in range(1, len(body)):  # (an empty read would be the body's end)
        results = await batches(scripted(body[:at], body[at:]))
        assert [c for result in results for c in cast(list[Any], result)] == whole, at


async def test_a_malformed_chunk_ends_its_read_s_batch_and_the_next_call_raises_it() -> None:
    one_read = chunk("a") + chunk("b") + b"data: {not json\n\n" + chunk("c")
    results = await batches(scripted(one_read))
    assert results == [[content("a"), content("b")], MalformedResponse, [content("c")]]
    stream = scripted(chunk("a") + b"data: {not json\n\n")
    assert await stream.next_chunks() == [content("a")]
    with pytest.raises(MalformedResponse, match=r"^invalid JSON in the stream: Expecting property name"):
        await stream.next_chunks()


@pytest.mark.parametrize(
    "bad",
    [
        [b"1,2"],
        [b'{"a":1},{"b":2}'],
        [b'{"a":1} {"b":2}'],
        [b'{"a":1},{"b":2}', b'{"c":[{}', b"{}]}"],  # two extra values, and two halves of one
        [b'"text"'],
        [b"[1]"],
        [b""],
    ],
)
async def test_a_data_that_is_not_one_json_object_is_rejected_not_split_or_joined(bad: list[bytes]) -> None:
    body = chunk("a") + b"".join(b"data: " + data + b"\n\n" for data in bad) + chunk("b")
    results = await batches(scripted(body))
    assert results == [[content("a")], *[MalformedResponse] * len(bad), [content("b")]]


async def test_an_error_mid_batch_ends_the_batch_and_is_raised_with_its_details() -> None:
    error = b'data: {"error": {"message": "overloaded", "code": "503"}}\n\n'
    stream = scripted(chunk("a") + error + chunk("b"))
    assert await stream.next_chunks() == [content("a")]
    with pytest.raises(ProviderStatusError) as raised:
        await stream.next_chunks()
    assert (raised.value.status, raised.value.code, raised.value.message) == (None, "503", "overloaded")
    assert await stream.next_chunks() == [content("b")]
    named = b'event: error\ndata: {"message": "quota"}\n\n'
    assert await batches(scripted(chunk("a") + named + chunk("b"))) == [
        [content("a")],
        ProviderStatusError,
        [content("b")],
    ]


async def test_done_mid_batch_ends_the_stream_and_what_follows_is_never_read() -> None:
    stream = scripted(chunk("a") + chunk("b") + b"data: [DONE]\n\n" + chunk("c"), chunk("d"))
    assert await batches(stream) == [[content("a"), content("b")]]
    assert await batches(scripted(b"data: [DONE]\n\n" + chunk("a"))) == []


async def test_text_before_a_malformed_chunk_in_the_same_read_reaches_the_user(raw_provider: Any) -> None:
    body = chunk("Kept") + chunk(" too") + b"data: {not json\n\n" + chunk(" lost")
    text, end = await reply(await raw_provider([body]))
    assert text == "Kept too"
    assert end.outcome is Outcome.INTERRUPTED
    assert end.error is not None and end.error.kind is ErrorKind.PROVIDER_DOWN


async def test_a_whole_completion_read_in_batches_is_one_chunk_then_the_end(raw_provider: Any) -> None:
    completion = {"model": "m-2", "choices": [{"message": {"content": "Whole."}, "finish_reason": "stop"}]}
    base_url = await raw_provider([json.dumps(completion).encode()], "application/json")
    wire = OpenAIWire(api_key="sk-test", base_url=base_url)
    try:
        stream = await wire.stream_completion({"model": "m", "messages": [], "stream": True})
        choices = [{"delta": {"content": "Whole."}, "finish_reason": "stop"}]
        assert await stream.next_chunks() == [{"model": "m-2", "choices": choices, "usage": None}]
        assert await stream.next_chunks() is None
        stream.close()
    finally:
        await wire.aclose()
