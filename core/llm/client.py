"""Streaming chat completions from any OpenAI-compatible endpoint.

`LLMClient.stream()` yields `TextDelta`s and then exactly one `StreamEnd`. Provider problems never
raise: they end the stream with an outcome, an `LLMError` and a notice. Retries (bounded in attempts
and time, with full-jitter back-off that honours the provider's retry hints) happen only before the
first token: once text was shown, a retry would show it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from core.llm.errors import ErrorKind, LLMError, classify, rejects_stream_options
from core.llm.failures import ProviderFailure, ProviderStatusError, ProviderUnreachable
from core.llm.retry import backoff_delay, retry_after_seconds
from core.llm.state import StreamState, seconds
from core.llm.types import ChatRequest, LLMTimeouts, RetryPolicy, StreamEnd, StreamEvent, TextDelta
from core.llm.wire import ChunkStream, MissingAPIKey, OpenAIWire

logger = logging.getLogger("threadline.llm")

MODELS_PREVIEW = 5
DEFAULT_TIMEOUTS = LLMTimeouts()
DEFAULT_RETRY = RetryPolicy()
# Once text flows, reads of the socket are held this long by default (see `stream`'s read_interval).
READ_COALESCING_SECONDS = 0.5

ReadInterval = Callable[[], float]


class LLMClient:
    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        timeouts: LLMTimeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy = DEFAULT_RETRY,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`api_key` / `base_url` of None fall back to OPENAI_API_KEY / OPENAI_BASE_URL.

        A given `session` is used for the requests and is not closed by `aclose()`.
        """
        self._timeouts = timeouts
        self._retry = retry
        try:
            self._wire = OpenAIWire(api_key=api_key, base_url=base_url, session=session)
        except MissingAPIKey:
            summary = "No API key is configured: set OPENAI_API_KEY (local servers accept any value)."
            raise LLMError(ErrorKind.AUTH, summary) from None
        self.endpoint = _display_url(self._wire.base_url)
        self._without_stream_options: set[tuple[str, str]] = set()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._wire.aclose()

    def stream(
        self, request: ChatRequest, read_interval: ReadInterval | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream one reply. Close the iterator (e.g. `contextlib.aclosing`) to stop it early.

        Once text flows, each read of the socket is held until `read_interval()` seconds after the
        previous one (default READ_COALESCING_SECONDS), so that one wake-up serves many chunks.
        """
        return self._stream(request, read_interval or _default_read_interval)

    async def check(self) -> str:
        """List the endpoint's models; a short summary, or LLMError saying what is wrong."""
        scope = asyncio.timeout(self._timeouts.first_token)
        try:
            async with scope:
                names = sorted(await self._wire.list_models())
        except TimeoutError:
            if not scope.expired():
                raise
            limit = seconds(self._timeouts.first_token)
            error = LLMError(ErrorKind.TIMEOUT, f"{self.endpoint} did not answer within {limit}.")
            self._log(error, "listing models timed out")
            raise error from None
        except ProviderFailure as exc:
            error = self._models_error(exc)
            self._log(error, "listing models failed", exc)
            raise error from None
        preview = ", ".join(names[:MODELS_PREVIEW]) + (", …" if len(names) > MODELS_PREVIEW else "")
        return f"{self.endpoint} answered: {len(names)} models available" + (f" ({preview})" if names else "")

    async def _stream(
        self, request: ChatRequest, read_interval: ReadInterval
    ) -> AsyncGenerator[StreamEvent, None]:
        loop = asyncio.get_running_loop()
        state = StreamState(request, self._timeouts, loop.time())
        opened = await self._open(request, state)
        if isinstance(opened, StreamEnd):
            logger.debug("%s stream from %s ended: %s", request.model, self.endpoint, opened.outcome.value)
            yield opened
            return
        stream, first_text = opened
        end: StreamEnd | None = None
        try:
            yield TextDelta(first_text)
            while end is None:
                text, end = await self._next_text(stream, state, read_interval())
                if text:
                    yield TextDelta(text)
        finally:
            stream.close()
        logger.debug("%s stream from %s ended: %s", request.model, self.endpoint, end.outcome.value)
        yield end

    async def _open(self, request: ChatRequest, state: StreamState) -> tuple[ChunkStream, str] | StreamEnd:
        """Retry until the first content delta arrives, or end the stream without any text."""
        key = (self.endpoint, request.model)
        include_usage = key not in self._without_stream_options
        failures = 0
        while True:
            deadline, timeout_outcome = state.deadline_before_text()
            scope = asyncio.timeout_at(deadline)
            try:
                async with scope:
                    stream, first_text = await self._attempt(request, state, include_usage)
            except TimeoutError:
                if not scope.expired():
                    raise
                end = state.timed_out(timeout_outcome)
                self._log(end.error, f"no first token after {failures + 1} attempt(s)")
                return end
            except ProviderFailure as exc:
                if include_usage and isinstance(exc, ProviderStatusError) and rejects_stream_options(exc):
                    logger.info("%s rejects stream_options; retrying without usage reporting", self.endpoint)
                    include_usage = False
                    continue
                failures += 1
                give_up_or_delay = self._after_failure(exc, failures, state)
                if isinstance(give_up_or_delay, StreamEnd):
                    return give_up_or_delay
                await asyncio.sleep(give_up_or_delay)
                continue
            if not include_usage:
                self._without_stream_options.add(key)
            if first_text is None:
                return state.finished()
            return stream, first_text

    async def _attempt(
        self, request: ChatRequest, state: StreamState, include_usage: bool
    ) -> tuple[ChunkStream, str | None]:
        """One request, read up to its first content delta; the stream is closed unless returned open."""
        state.begin_attempt()
        stream = await self._wire.stream_completion(_body(request, include_usage))
        try:
            first_text = await self._first_text(stream, state)
        except BaseException:
            stream.close()
            raise
        if first_text is None:
            stream.close()
        return stream, first_text

    async def _first_text(self, stream: ChunkStream, state: StreamState) -> str | None:
        loop = asyncio.get_running_loop()
        while (chunk := await stream.next_chunk()) is not None:
            text = state.absorb(chunk, loop.time())
            if text:
                return text
        return None

    async def _next_text(
        self, stream: ChunkStream, state: StreamState, read_interval: float
    ) -> tuple[str, StreamEnd | None]:
        """The content text of the chunks received together ("" when they carry none), or how the
        stream ended."""
        deadline, timeout_outcome = state.deadline_for_next_token()
        stream.pace_reads(read_interval, deadline - read_interval)
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                chunks = await stream.next_chunks()
        except TimeoutError:
            if not scope.expired():
                raise
            end = state.timed_out(timeout_outcome)
            self._log(end.error, "stream timed out after text was shown")
            return "", end
        except ProviderFailure as exc:
            error = self._mid_reply_error(exc, state.request.model)
            end = state.broken(error, connection_dropped=_dropped(exc))
            self._log(end.error, "stream broke after text was shown", exc)
            return "", end
        if chunks is None:
            return "", state.finished()
        now = asyncio.get_running_loop().time()
        return "".join([state.absorb(chunk, now) for chunk in chunks]), None

    def _after_failure(self, exc: ProviderFailure, failures: int, state: StreamState) -> StreamEnd | float:
        """The failed stream's end, or how long to wait before trying again."""
        model = state.request.model
        error = classify(exc, model=model, endpoint=self.endpoint, attempts=failures)
        delay = self._retry_delay(error, exc, failures, state)
        if delay is None:
            self._log(error, f"request failed after {failures} attempt(s)", exc)
            return state.failed(error)
        logger.info(
            "retrying %s in %.2f s (attempt %d of %d failed: %s)",
            model,
            delay,
            failures,
            self._retry.max_attempts,
            self._redact(str(exc)),
        )
        return delay

    def _retry_delay(
        self, error: LLMError, exc: ProviderFailure, failures: int, state: StreamState
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        if not error.retryable or failures >= self._retry.max_attempts:
            return None
        hint = retry_after_seconds(exc.headers) if isinstance(exc, ProviderStatusError) else None
        delay = backoff_delay(self._retry, failures, hint)
        resume_at = asyncio.get_running_loop().time() + delay
        deadline, _ = state.deadline_before_text()
        if resume_at - state.started > self._retry.max_total or resume_at >= deadline:
            return None
        return delay

    def _mid_reply_error(self, exc: ProviderFailure, model: str) -> LLMError:
        if _dropped(exc):
            summary = f"The connection to the model provider at {self.endpoint} dropped mid-reply."
            return LLMError(ErrorKind.PROVIDER_DOWN, summary)
        return classify(exc, model=model, endpoint=self.endpoint)

    def _models_error(self, exc: ProviderFailure) -> LLMError:
        if isinstance(exc, ProviderStatusError) and exc.status == 404:
            summary = f"{self.endpoint} has no /models route; check OPENAI_BASE_URL (it usually ends in /v1)."
            return LLMError(ErrorKind.BAD_REQUEST, summary, status=404)
        return classify(exc, model="", endpoint=self.endpoint)

    def _log(self, error: LLMError | None, what: str, exc: BaseException | None = None) -> None:
        if error is None:
            return
        detail = f": {self._redact(repr(exc))}" if exc is not None else ""
        logger.warning(
            "LLM %s [error id %s] kind=%s status=%s endpoint=%s%s",
            what,
            error.error_id,
            error.kind.value,
            error.status,
            self.endpoint,
            detail,
        )

    def _redact(self, text: str) -> str:
        key = self._wire.api_key
        return text.replace(key, "[redacted]") if key else text


def _default_read_interval() -> float:
    return READ_COALESCING_SECONDS


def _body(request: ChatRequest, include_usage: bool) -> dict[str, Any]:
    """The JSON of a streamed chat completion; parameters left unset are not sent."""
    body: dict[str, Any] = {"model": request.model, "messages": request.messages, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    optional = {"temperature": request.temperature, "top_p": request.top_p, "max_tokens": request.max_tokens}
    body.update((name, value) for name, value in optional.items() if value is not None)
    if request.json_mode:
        body["response_format"] = {"type": "json_object"}
    return body


def _dropped(exc: BaseException) -> bool:
    return isinstance(exc, ProviderUnreachable) and exc.dropped


def _display_url(url: str) -> str:
    """The endpoint without credentials or query, fit for logs and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
