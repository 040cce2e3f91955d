"""The OpenAI-compatible HTTP API on aiohttp: one streamed chat completion, and the model list.

Chunks come back as the plain dicts of the API's JSON. Parsing them with `json.loads` instead of the
openai SDK's typed models (over httpx) costs a fraction of the CPU per chunk, which dominates a
bot's own cost: see bench/README.md.
"""

from __future__ import annotations

import asyncio
import json
import json.scanner
import math
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from core.llm.failures import (
    MalformedResponse,
    ProviderFailure,
    ProviderStatusError,
    ProviderTimedOut,
    ProviderUnreachable,
    status_error,
)
from core.llm.sse import ServerEvent, SSEDecoder
from core.metrics import measured_sleep

DEFAULT_BASE_URL = "https://api.openai.com/v1"
ERROR_BODY_LIMIT = 64 * 1024
USER_AGENT = "threadline"
DONE = b"[DONE]"

Chunk = dict[str, Any]

# json.loads' C scanner, configured as json.loads' own decoder (typeshed wants a make_scanner where any
# object with the decoder's parse settings will do).
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


class MissingAPIKey(Exception):
    """Neither the caller nor OPENAI_API_KEY gave a key."""


class ChunkStream:
    """The chunks of one streamed completion, read as they arrive. Always `close()` it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._decoder = SSEDecoder()
        self._pending: deque[ServerEvent] = deque()
        self._ended = False
        self._read_interval = 0.0
        self._hold_limit = math.inf
        self._last_read: float | None = None  # loop time: when the last held read was let through

    def pace_reads(self, interval: float, until: float) -> None:
        """Hold the next read until `interval` s after the previous one (the first time: after now),
        and never past `until` (loop time): text already received must be read before a time-out
        judges the stream by it. An interval of 0 reads at once.

        Chunks arrive every few milliseconds, and waking up for each costs more CPU than handling it;
        reading what accumulated in the socket lets one wake-up serve many chunks.
        """
        if self._last_read is None:
            self._last_read = asyncio.get_running_loop().time()
        self._read_interval = interval
        self._hold_limit = until

    async def next_chunk(self) -> Chunk | None:
        """The next chunk, or None once the stream ended (`[DONE]` or the end of the body)."""
        if not await self._events_pending():
            return None
        event = self._pending.popleft()
        if event.data == DONE:
            self._done()
            return None
        return self._parse(event)

    async def next_chunks(self) -> list[Chunk] | None:
        """The next chunk and those received with it, or None once the stream ended.

        A read brings about ten chunks: handling them together saves the per-chunk awaits. A chunk
        that fails to parse ends the batch; the next call raises its error.
        """
        if not await self._events_pending():
            return None
        chunks: list[Chunk] = []
        pending = self._pending
        while pending:
            event = pending[0]
            if event.data == DONE:
                self._done()
                break
            # The C scanner alone is what json.loads runs under its Python layers. It answers only for
            # a data that is exactly one JSON value in UTF-8 (no BOM, no surrounding space), where
            # json.loads gives the same; anything else, or an error, gets _parse's own answer.
            try:
                text = event.data.decode()
                chunk, end = _scan(text, 0)
                plain = end == len(text) and type(chunk) is dict and chunk.get("error") is None
            except (ValueError, StopIteration, RecursionError):
                plain = False
            if not plain or event.event is not None:
                if not chunks:  # as next_chunk does, the first event is taken even if it fails
                    pending.popleft()
                    chunks.append(self._parse(event))
                    continue
                try:
                    chunk = self._parse(event)
                except ProviderFailure:
                    break  # left pending: the next call raises it
            pending.popleft()
            chunks.append(chunk)
        return chunks or None

    def close(self) -> None:
        self._ended = True
        self._response.close()

    async def _events_pending(self) -> bool:
        """Read until an event is pending; False once the stream ended without one."""
        while not self._pending:
            if self._ended:
                return False
            await self._read()
        return True

    async def _read(self) -> None:
        if self._read_interval > 0:
            await self._hold_reads()
        with _network_failures(dropped=True):
            data = await self._response.content.readany()
        if data:
            self._pending.extend(self._decoder.feed(data))
        else:
            self._pending.extend(self._decoder.close())
            self._ended = True

    async def _hold_reads(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time() if self._last_read is None else self._last_read
        wait = min(last + self._read_interval, self._hold_limit) - loop.time()
        connection = self._response.connection
        transport = connection.transport if connection is not None else None
        idle = transport is not None and transport.is_reading() and not self._response.content.is_eof()
        if wait > 0 and transport is not None and idle:
            transport.pause_reading()
            try:
                await measured_sleep(wait)
            finally:
                if not transport.is_closing():
                    transport.resume_reading()
        self._last_read = loop.time()

    def _done(self) -> None:
        self._ended = True
        self._pending.clear()

    def _parse(self, event: ServerEvent) -> Chunk:
        try:
            chunk = json.loads(event.data)
        except ValueError as exc:
            raise MalformedResponse(f"invalid JSON in the stream: {exc}") from None
        if not isinstance(chunk, dict):
            raise MalformedResponse("a stream event is not a JSON object")
        if event.event == b"error" or chunk.get("error") is not None:
            raise status_error(None, chunk, fallback="An error occurred during streaming")
        return chunk


class OpenAIWire:
    """Requests to one endpoint; owns its connection pool unless handed a session."""

    def __init__(
        self, *, api_key: str | None, base_url: str | None, session: aiohttp.ClientSession | None = None
    ) -> None:
        """`api_key` / `base_url` of None fall back to OPENAI_API_KEY / OPENAI_BASE_URL."""
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not key:
            raise MissingAPIKey
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = key
        self._headers = _headers(key)
        self._proxy, self._proxy_auth = _env_proxy(self.base_url)
        self._session = session
        self._owns_session = session is None

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def stream_completion(self, body: dict[str, Any]) -> ChunkStream:
        """POST /chat/completions with `stream: true`; the open stream, or a ProviderFailure."""
        response = await self._request("POST", "/chat/completions", body)
        if response.content_type == "application/json":
            return _whole_completion(response, await self._json(response))
        return ChunkStream(response)

    async def list_models(self) -> list[str]:
        response = await self._request("GET", "/models", None)
        page = await self._json(response)
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise MalformedResponse("the model list has no `data` array")
        return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> aiohttp.ClientResponse:
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        with _network_failures(dropped=False):
            response = await self._pool().request(
                method,
                self.base_url + path,
                data=payload,
                headers=self._headers,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            )
        if response.status >= 400:
            raise await self._error(response)
        return response

    async def _error(self, response: aiohttp.ClientResponse) -> ProviderStatusError:
        try:
            raw = await response.content.read(ERROR_BODY_LIMIT)
        except (aiohttp.ClientError, OSError):
            raw = b""
        finally:
            response.close()
        text = raw.decode("utf-8", "replace")
        try:
            body: object = json.loads(text)
        except ValueError:
            body = None
        return status_error(response.status, body, response.headers, fallback=" ".join(text.split())[:500])

    async def _json(self, response: aiohttp.ClientResponse) -> Any:
        try:
            with _network_failures(dropped=True):
                raw = await response.read()
        finally:
            response.close()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise MalformedResponse(f"invalid JSON: {exc}") from None

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No pool limit: each streaming reply holds a connection for its whole length.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            # Not trust_env: the proxy comes from _env_proxy, and ~/.netrc must not add an auth to the
            # bearer token (aiohttp would refuse the request).
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)
            )
        return self._session


def _env_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy HTTP(S)_PROXY and NO_PROXY give for `url`, as aiohttp's trust_env finds it, read once:
    with trust_env, aiohttp reads them (and ~/.netrc) in a worker thread at every request."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:  # no proxy for this URL
        return None, None


@contextmanager
def _network_failures(*, dropped: bool) -> Iterator[None]:
    """aiohttp's and the socket's errors as ProviderFailures; `dropped`: a response had begun."""
    try:
        yield
    except aiohttp.ServerTimeoutError as exc:  # before ClientError, which it also is
        raise ProviderTimedOut(str(exc) or "timed out") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ProviderUnreachable(repr(exc), dropped=dropped) from exc


class _WholeStream(ChunkStream):
    """A provider that ignored `stream: true` and sent one JSON completion: served as one chunk."""

    def __init__(self, response: aiohttp.ClientResponse, chunk: Chunk) -> None:
        super().__init__(response)
        self._chunk: Chunk | None = chunk

    async def next_chunk(self) -> Chunk | None:
        chunk, self._chunk = self._chunk, None
        return chunk

    async def next_chunks(self) -> list[Chunk] | None:
        chunk = await self.next_chunk()
        return None if chunk is None else [chunk]


def _whole_completion(response: aiohttp.ClientResponse, completion: object) -> ChunkStream:
    if not isinstance(completion, dict):
        raise MalformedResponse("the completion is not a JSON object")
    choices = []
    for choice in completion.get("choices") or []:
        if isinstance(choice, dict):
            delta = choice.get("message") if isinstance(choice.get("message"), dict) else {}
            choices.append({"delta": delta, "finish_reason": choice.get("finish_reason")})
    chunk = {"model": completion.get("model"), "choices": choices, "usage": completion.get("usage")}
    return _WholeStream(response, chunk)


def _headers(api_key: str) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "text/event-stream, application/json",
        "User-Agent": USER_AGENT,
    }
    organization = os.environ.get("OPENAI_ORG_ID")
    project = os.environ.get("OPENAI_PROJECT_ID")
    if organization:
        headers["OpenAI-Organization"] = organization
    if project:
        headers["OpenAI-Project"] = project
    return headers


__all__ = ["ChunkStream", "MissingAPIKey", "OpenAIWire", "ProviderFailure"]
