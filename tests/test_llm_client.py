"""The LLM client talking to FakeOpenAI (OpenAI's wire format) over loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from core.llm import (
    ChatRequest,
    ErrorKind,
    LLMClient,
    LLMError,
    LLMTimeouts,
    Outcome,
    RetryPolicy,
    StreamEnd,
    TextDelta,
    Usage,
)
from core.llm.retry import backoff_delay, retry_after_seconds
from tests.fakes.openai_server import ErrorReply, FakeOpenAI, StreamReply, clear_proxy_env
from tests.fakes.openai_server import fake_openai as fake_openai  # the fixture

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, max_total=2.0)
ROOMY_TIMEOUTS = LLMTimeouts(first_token=3.0, between_tokens=3.0, total=6.0)


def make_client(
    fake: FakeOpenAI, *, timeouts: LLMTimeouts = ROOMY_TIMEOUTS, retry: RetryPolicy = FAST_RETRY
) -> LLMClient:
    return LLMClient(api_key="sk-test", base_url=fake.base_url, timeouts=timeouts, retry=retry)


@pytest.fixture
async def llm(fake_openai: FakeOpenAI) -> AsyncIterator[LLMClient]:
    client = make_client(fake_openai)
    yield client
    await client.aclose()


def ask(text: str = "Hi there", model: str = "gpt-4o-mini", **params: Any) -> ChatRequest:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    return ChatRequest(model=model, messages=messages, **params)


async def run(client: LLMClient, request: ChatRequest) -> tuple[str, StreamEnd]:
    """The reply text as a user would see it, and the final event (checked to come once, last)."""
    events = [event async for event in client.stream(request)]
    *deltas, end = events
    assert isinstance(end, StreamEnd)
    assert all(isinstance(delta, TextDelta) and delta.text for delta in deltas)
    return "".join(delta.text for delta in deltas if isinstance(delta, TextDelta)), end


def failure(end: StreamEnd) -> LLMError:
    assert end.error is not None
    assert end.error.message.endswith(f"(error id {end.error.error_id})")
    return end.error


# --- normal streams ---------------------------------------------------------------------------


async def test_streams_text_and_reads_usage(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(StreamReply.words("Hello there, friend!", usage=(12, 4)))
    text, end = await run(llm, ask())
    assert text == "Hello there, friend!"
    assert end == StreamEnd(Outcome.COMPLETE, "stop", Usage(12, 4), "gpt-4o-mini", None, None)
    sent = fake_openai.requests[0]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == ask().messages
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert not {"temperature", "top_p", "max_tokens", "response_format"} & sent.keys()


async def test_sends_persona_parameters(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    await run(llm, ask(temperature=0.3, top_p=0.9, max_tokens=256, json_mode=True))
    sent = fake_openai.requests[0]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.3, 0.9, 256)
    assert sent["response_format"] == {"type": "json_object"}


async def test_chunks_with_empty_choices_are_ignored(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(StreamReply.words("Azure says hi", empty_choices=True))
    text, end = await run(llm, ask())
    assert text == "Azure says hi"
    assert end.outcome is Outcome.COMPLETE


async def test_missing_finish_reason_keeps_the_text(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(StreamReply.words("All done here", finish_reason=None, usage=(5, 3)))
    text, end = await run(llm, ask())
    assert text == "All done here"
    assert end.outcome is Outcome.NO_FINISH_REASON
    assert (end.finish_reason, end.notice, end.error) == (None, None, None)
    assert end.usage == Usage(5, 3)


async def test_length_finish_is_cut_at_limit(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(StreamReply.words("The answer is", finish_reason="length"))
    text, end = await run(llm, ask(max_tokens=3))
    assert text == "The answer is"
    assert end.outcome is Outcome.CUT_AT_LIMIT
    assert end.notice == "⚠️ Reply cut at the token limit (max_tokens=3)."


async def test_content_filter_is_reported(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(StreamReply.words("I can", finish_reason="content_filter"))
    text, end = await run(llm, ask())
    assert text == "I can"
    assert end.outcome is Outcome.FILTERED
    assert end.notice == "⚠️ The provider filtered this reply."


# --- retries and errors before the first token ----------------------------------------------------


async def test_rate_limit_then_success_is_retried(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(ErrorReply.rate_limited(), StreamReply.words("Second time lucky"))
    text, end = await run(llm, ask())
    assert text == "Second time lucky"
    assert end.outcome is Outcome.COMPLETE
    assert len(fake_openai.requests) == 2


async def test_server_errors_give_up_after_bounded_attempts(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(*[ErrorReply.server_error(503)] * 6)
    text, end = await run(llm, ask())
    assert text == ""
    assert end.outcome is Outcome.FAILED
    error = failure(end)
    assert (error.kind, error.status) == (ErrorKind.PROVIDER_DOWN, 503)
    assert "gave up after 3 attempts" in error.message
    assert end.notice == f"⚠️ {error.message}"
    assert len(fake_openai.requests) == FAST_RETRY.max_attempts


async def test_a_given_session_is_used_and_left_open(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    async with aiohttp.ClientSession() as session:
        client = LLMClient(api_key=None, base_url=None, session=session, retry=FAST_RETRY)
        fake_openai.enqueue(*[ErrorReply.server_error()] * FAST_RETRY.max_attempts)
        _, end = await run(client, ask())
        assert failure(end).kind is ErrorKind.PROVIDER_DOWN
        assert len(fake_openai.requests) == FAST_RETRY.max_attempts
        await client.aclose()
        assert not session.closed
        text, _ = await run(client, ask("still open"))
        assert text == "Echo: still open"


async def test_retry_hint_beyond_the_first_token_deadline_gives_up_at_once(fake_openai: FakeOpenAI) -> None:
    slow_hint = ErrorReply(429, "Slow down.", "requests", headers={"retry-after-ms": "5000"})
    fake_openai.enqueue(slow_hint, StreamReply.words("too late"))
    retry = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=10.0, max_total=60.0)
    async with make_client(fake_openai, retry=retry, timeouts=LLMTimeouts(first_token=1.0)) as client:
        _, end = await run(client, ask())
    assert (end.outcome, failure(end).kind) == (Outcome.FAILED, ErrorKind.RATE_LIMITED)
    assert len(fake_openai.requests) == 1


async def test_exhausted_quota_is_not_retried(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    quota = ErrorReply(429, "You exceeded your quota.", "insufficient_quota", code="insufficient_quota")
    fake_openai.enqueue(quota)
    _, end = await run(llm, ask())
    assert failure(end).kind is ErrorKind.RATE_LIMITED
    assert "quota" in failure(end).message
    assert len(fake_openai.requests) == 1


async def test_rejected_api_key_is_auth_and_not_retried(
    fake_openai: FakeOpenAI, llm: LLMClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.api_key = "sk-the-right-one"
    with caplog.at_level(logging.WARNING, logger="threadline.llm"):
        _, end = await run(llm, ask())
    error = failure(end)
    assert (end.outcome, error.kind, error.status) == (Outcome.FAILED, ErrorKind.AUTH, 401)
    assert error.message.startswith("The model provider rejected the API key")
    assert len(fake_openai.requests) == 1
    assert error.error_id in caplog.text
    assert "sk-test" not in caplog.text


async def test_unknown_model_is_model_not_found(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(ErrorReply.model_not_found("gpt-9"))
    _, end = await run(llm, ask(model="gpt-9"))
    error = failure(end)
    assert (error.kind, error.status) == (ErrorKind.MODEL_NOT_FOUND, 404)
    assert error.message.startswith("The model 'gpt-9' does not exist on this endpoint")
    assert len(fake_openai.requests) == 1


async def test_context_too_long_is_its_own_kind(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(ErrorReply.context_length_exceeded())
    _, end = await run(llm, ask())
    assert failure(end).kind is ErrorKind.CONTEXT_TOO_LONG
    assert len(fake_openai.requests) == 1


async def test_other_bad_requests_show_the_providers_reason(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    message = "Unsupported value: 'temperature'."
    fake_openai.enqueue(
        ErrorReply(400, message, "invalid_request_error", code="unsupported_value", param="temperature")
    )
    _, end = await run(llm, ask(temperature=0.2))
    error = failure(end)
    assert error.kind is ErrorKind.BAD_REQUEST
    assert "Unsupported value: 'temperature'." in error.message
    assert len(fake_openai.requests) == 1


async def test_unreachable_endpoint_is_provider_down(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxy_env(monkeypatch)
    async with FakeOpenAI() as gone:
        pass  # started and stopped: nothing listens on its port any more
    async with make_client(gone) as client:
        _, end = await run(client, ask())
    error = failure(end)
    assert (end.outcome, error.kind) == (Outcome.FAILED, ErrorKind.PROVIDER_DOWN)
    assert f"127.0.0.1:{gone.port}" in error.message


def test_missing_api_key_is_reported_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMError) as raised:
        LLMClient(api_key=None, base_url="http://127.0.0.1:1/v1")
    assert raised.value.kind is ErrorKind.AUTH
    assert "OPENAI_API_KEY" in raised.value.message


# --- stream_options fallback ----------------------------------------------------------------------


async def test_provider_rejecting_stream_options_falls_back_and_is_remembered(
    fake_openai: FakeOpenAI, llm: LLMClient
) -> None:
    fake_openai.reject_stream_options = True
    fake_openai.enqueue(StreamReply.words("No usage here"), StreamReply.words("Still fine"))
    text, end = await run(llm, ask())
    assert (text, end.outcome, end.usage) == ("No usage here", Outcome.COMPLETE, None)
    assert ["stream_options" in body for body in fake_openai.requests] == [True, False]
    text, _ = await run(llm, ask())
    assert text == "Still fine"
    assert ["stream_options" in body for body in fake_openai.requests] == [True, False, False]


# --- after the first token: never retried ---------------------------------------------------------


async def test_dropped_stream_keeps_partial_text_and_is_not_retried(
    fake_openai: FakeOpenAI, llm: LLMClient
) -> None:
    fake_openai.enqueue(StreamReply.words("one two three four", cut_after=2))
    text, end = await run(llm, ask())
    assert text == "one two"
    assert end.outcome is Outcome.INTERRUPTED
    assert end.notice == "⚠️ The connection to the model dropped; the reply is incomplete."
    assert failure(end).kind is ErrorKind.PROVIDER_DOWN
    assert len(fake_openai.requests) == 1


async def test_drop_before_any_text_is_retried(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(StreamReply.words("lost", cut_after=0), StreamReply.words("found"))
    text, end = await run(llm, ask())
    assert (text, end.outcome) == ("found", Outcome.COMPLETE)
    assert len(fake_openai.requests) == 2


# --- time-outs -------------------------------------------------------------------------------------


async def test_slow_first_token_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply.words("too slow", first_delay=2.0))
    async with make_client(fake_openai, timeouts=LLMTimeouts(first_token=0.2, total=5.0)) as client:
        text, end = await run(client, ask())
    assert (text, end.outcome) == ("", Outcome.TIMEOUT_FIRST_TOKEN)
    assert end.notice == "⏱️ The model did not start answering within 0.2 s."
    assert failure(end).kind is ErrorKind.TIMEOUT
    assert len(fake_openai.requests) == 1
    await fake_openai.wait_for_disconnects(1)


async def test_role_chunk_alone_is_not_a_first_token(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply.words("never sent", stall_after=0))
    async with make_client(fake_openai, timeouts=LLMTimeouts(first_token=0.2, total=5.0)) as client:
        _, end = await run(client, ask())
    assert end.outcome is Outcome.TIMEOUT_FIRST_TOKEN


async def test_stall_between_tokens_keeps_partial_text(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply.words("alpha beta gamma", stall_after=2))
    timeouts = LLMTimeouts(first_token=2.0, between_tokens=0.2, total=5.0)
    async with make_client(fake_openai, timeouts=timeouts) as client:
        text, end = await run(client, ask())
    assert text == "alpha beta"
    assert end.outcome is Outcome.TIMEOUT_BETWEEN_TOKENS
    assert end.notice == "⏱️ The model stopped sending text for 0.2 s; the reply is incomplete."
    assert len(fake_openai.requests) == 1
    await fake_openai.wait_for_disconnects(1)


async def test_total_time_out_stops_a_steady_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply(["tick"] * 50, chunk_delay=0.05))
    timeouts = LLMTimeouts(first_token=2.0, between_tokens=2.0, total=0.3)
    async with make_client(fake_openai, timeouts=timeouts) as client:
        text, end = await run(client, ask())
    assert text.startswith("ticktick")
    assert len(text) < len("tick") * 50
    assert end.outcome is Outcome.TIMEOUT_TOTAL
    assert end.notice == "⏱️ The reply took longer than 0.3 s and was stopped; it is incomplete."


# --- cancellation ----------------------------------------------------------------------------------


async def test_closing_the_stream_early_closes_the_http_stream(
    fake_openai: FakeOpenAI, llm: LLMClient
) -> None:
    fake_openai.enqueue(StreamReply(["first", " second", " third"], chunk_delay=5.0))
    async with aclosing(llm.stream(ask())) as events:
        first = await anext(events)
    assert first == TextDelta("first")
    await fake_openai.wait_for_disconnects(1, within=1.0)


async def test_cancelling_the_task_closes_the_http_stream(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.enqueue(StreamReply(["never"], first_delay=5.0))

    async def consume() -> None:
        async for _ in llm.stream(ask()):
            pass

    task = asyncio.create_task(consume())
    await fake_openai.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_openai.wait_for_disconnects(1, within=1.0)


# --- doctor ---------------------------------------------------------------------------------------


async def test_check_lists_models(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.models = ["gpt-4o", "gpt-4o-mini", "llama3"]
    summary = await llm.check()
    assert summary == f"{fake_openai.base_url} answered: 3 models available (gpt-4o, gpt-4o-mini, llama3)"


async def test_check_reports_a_rejected_key(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.api_key = "sk-other"
    with pytest.raises(LLMError) as raised:
        await llm.check()
    assert raised.value.kind is ErrorKind.AUTH


async def test_check_reports_a_base_url_without_models(fake_openai: FakeOpenAI, llm: LLMClient) -> None:
    fake_openai.models_error = ErrorReply(404, "Not found", "invalid_request_error")
    with pytest.raises(LLMError) as raised:
        await llm.check()
    assert raised.value.kind is ErrorKind.BAD_REQUEST
    assert "OPENAI_BASE_URL" in raised.value.message


# --- retry arithmetic -----------------------------------------------------------------------------


def test_retry_hints_are_read_from_headers() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds({"retry-after-ms": "10"}) == 0.01
    assert retry_after_seconds({"retry-after": "2.5"}) == 2.5
    assert retry_after_seconds({"retry-after": "Wed, 01 Jan 2025 12:00:07 GMT"}, now) == 7.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_backoff_is_capped_jittered_and_honours_hints() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert backoff_delay(policy, 1, retry_after=1.5) == 1.5
    assert backoff_delay(policy, 1, retry_after=120.0) == 4.0
    delays = [backoff_delay(policy, attempt) for attempt in (1, 2, 3, 10) for _ in range(200)]
    assert all(0.0 <= delay <= 4.0 for delay in delays)
    assert max(backoff_delay(policy, 1) for _ in range(200)) <= 0.5
    assert len(set(delays)) > 100  # jittered, not a fixed schedule


# --- coalesced reads -------------------------------------------------------------------------------


async def test_coalesced_reads_never_turn_a_steady_stream_into_a_time_out(fake_openai: FakeOpenAI) -> None:
    """Reads are held to save wake-ups, but never so long that text already sent looks late."""
    fake_openai.enqueue(StreamReply(["tick"] * 20, chunk_delay=0.05))
    timeouts = LLMTimeouts(first_token=2.0, between_tokens=0.3, total=1.6)
    async with make_client(fake_openai, timeouts=timeouts) as client:
        text, end = await run(client, ask())
    assert text == "tick" * 20
    assert end.outcome is Outcome.COMPLETE


async def test_the_end_of_a_stream_is_seen_within_the_read_interval(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply(["tick"] * 30, chunk_delay=0.05))
    async with make_client(fake_openai) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        text, end = await run(client, ask())
        took = loop.time() - started
    assert (text, end.outcome) == ("tick" * 30, Outcome.COMPLETE)
    assert took < 30 * 0.05 + 0.5 + 0.4  # the stream's length, one read interval, slack for CI


# --- proxies -----------------------------------------------------------------------------------------


async def test_requests_go_through_the_proxy_of_the_environment(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """HTTP_PROXY is honoured (the fake answers as the proxy: the endpoint's host does not exist), and a
    ~/.netrc entry for the endpoint does not break the bearer-token requests."""
    monkeypatch.setenv("HTTP_PROXY", fake_openai.base_url.removesuffix("/v1"))
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text("machine models.example.invalid login someone password secret\n")
    fake_openai.api_key = "sk-test"  # a request without the bearer token is refused
    fake_openai.enqueue(StreamReply.words("through the proxy"))
    async with LLMClient(
        api_key="sk-test", base_url="http://models.example.invalid/v1", retry=FAST_RETRY
    ) as client:
        text, end = await run(client, ask())
    assert (text, end.outcome) == ("through the proxy", Outcome.COMPLETE)
    assert len(fake_openai.requests) == 1


async def test_no_proxy_keeps_an_endpoint_off_the_proxy(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    fake_openai.enqueue(StreamReply.words("direct"))
    async with make_client(fake_openai) as client:
        text, _ = await run(client, ask())
    assert text == "direct"
