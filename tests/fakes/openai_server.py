"""A fake OpenAI-compatible endpoint that the real `openai` SDK talks to over loopback HTTP.

    async with FakeOpenAI() as fake:
        fake.enqueue(StreamReply.words("Hello there"), ErrorReply.rate_limited())
        client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-test")
        ...
        assert fake.requests[0]["model"] == "gpt-4o-mini"

Scripted replies are consumed one per chat-completion request; when the script is empty the
`default` answers (by default an echo of the last message). Streams are written as OpenAI writes
them: a role chunk, content chunks, a finish chunk, a usage chunk with empty `choices` when the
request asked for `stream_options.include_usage`, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
FAST_RETRY_HEADERS: Mapping[str, str] = {"retry-after-ms": "10"}
SSE_HEADERS: Mapping[str, str] = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class StreamReply:
    """A text answer. Streamed chunk by chunk, or joined when the request has `stream: false`.

    `cut_after=N` drops the connection after N content chunks; `stall_after=N` stops sending after
    N content chunks but keeps the connection open (until the client leaves or the server stops).
    `usage` is (prompt_tokens, completion_tokens); by default the prompt's word count and the
    number of chunks.
    """

    chunks: Sequence[str]
    finish_reason: str | None = "stop"
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    usage: tuple[int, int] | None = None
    model: str | None = None
    empty_choices: bool = False
    cut_after: int | None = None
    stall_after: int | None = None

    @classmethod
    def words(cls, text: str, **options: Any) -> StreamReply:
        """One chunk per word (the space travels with the following word), like a real model."""
        words = text.split(" ")
        chunks = [words[0], *(" " + word for word in words[1:])]
        return cls(chunks=[chunk for chunk in chunks if chunk], **options)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error with OpenAI's error body `{"error": {"message", "type", "param", "code"}}`."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: dict(FAST_RETRY_HEADERS))

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def rate_limited(cls) -> ErrorReply:
        return cls(429, "Rate limit reached for requests.", "requests", code="rate_limit_exceeded")

    @classmethod
    def server_error(cls, status: int = 500) -> ErrorReply:
        return cls(status, "The server had an error while processing your request.", "server_error")

    @classmethod
    def invalid_api_key(cls) -> ErrorReply:
        message = "Incorrect API key provided: sk-te**st."
        return cls(401, message, "invalid_request_error", code="invalid_api_key")

    @classmethod
    def model_not_found(cls, model: str) -> ErrorReply:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return cls(404, message, "invalid_request_error", code="model_not_found")

    @classmethod
    def context_length_exceeded(cls) -> ErrorReply:
        message = "This model's maximum context length is 128000 tokens. Please reduce the length."
        return cls(400, message, "invalid_request_error", code="context_length_exceeded", param="messages")

    @classmethod
    def stream_options_unsupported(cls) -> ErrorReply:
        message = "Unrecognized request argument supplied: stream_options"
        return cls(400, message, "invalid_request_error", code="unknown_parameter", param="stream_options")


Reply = StreamReply | ErrorReply
ReplySource = Reply | Callable[[dict[str, Any]], Reply]


def echo_reply(body: dict[str, Any]) -> Reply:
    """Answer "Echo: <last message>", one word per chunk."""
    messages = body.get("messages") or [{}]
    return StreamReply.words(f"Echo: {messages[-1].get('content', '')}")


class FakeOpenAI:
    """An aiohttp server on 127.0.0.1 (random port) serving /v1/chat/completions and /v1/models."""

    def __init__(self, *, default: ReplySource = echo_reply, api_key: str | None = None) -> None:
        self.default: ReplySource = default
        self.api_key = api_key  # when set, other bearer keys get 401 invalid_api_key
        self.requests: list[dict[str, Any]] = []
        self.reject_stream_options = False  # behave like a provider that refuses stream_options
        self.models: list[str] = ["gpt-4o-mini", "gpt-4o"]
        self.models_error: ErrorReply | None = None
        self.disconnects = 0  # streams the client left before the server had finished them
        self._script: deque[Reply] = deque()
        self._ids = itertools.count(1)
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()  # notified on every request and disconnect
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (or the SDK's env lookup) pointed at this server."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": self.api_key or "sk-test"}

    def enqueue(self, *replies: Reply) -> None:
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not consumed yet."""
        return len(self._script)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._list_models)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_for_requests(self, count: int = 1, within: float = 2.0) -> None:
        """Wait until `count` chat-completion requests in total arrived (TimeoutError if not)."""
        await self._wait_until(lambda: len(self.requests) >= count, within)

    async def wait_for_disconnects(self, count: int = 1, within: float = 2.0) -> None:
        """Wait until `count` streams in total were abandoned by the client (TimeoutError if not)."""
        await self._wait_until(lambda: self.disconnects >= count, within)

    async def _wait_until(self, predicate: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        if self.reject_stream_options and "stream_options" in body:
            return ErrorReply.stream_options_unsupported()
        if self._script:
            return self._script.popleft()
        return self.default(body) if callable(self.default) else self.default

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error_response(ErrorReply.invalid_api_key())

    async def _list_models(self, request: web.Request) -> web.Response:
        error = self._auth_error(request)
        if error is not None:
            return error
        if self.models_error is not None:
            return _error_response(self.models_error)
        data = [{"id": model, "object": "model", "created": 0, "owned_by": "fake"} for model in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        await self._notify()
        error = self._auth_error(request)
        if error is not None:
            return error
        reply = self._next_reply(body)
        if isinstance(reply, ErrorReply):
            return _error_response(reply)
        if not body.get("stream"):
            return web.json_response(self._completion(body, reply))
        try:
            return await self._stream(request, body, reply)
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            await self._notify()
            raise

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: StreamReply
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        model = reply.model or body.get("model", "")
        chunk = _ChunkWriter(response, f"chatcmpl-fake-{next(self._ids)}", model)
        if reply.first_delay:
            await asyncio.sleep(reply.first_delay)
        await chunk.write(delta={"role": "assistant", "content": ""})
        for sent, text in enumerate(reply.chunks):
            if await self._interrupted(request, reply, sent):
                return response
            if sent and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            if reply.empty_choices:
                await chunk.write_raw({"choices": []})
            await chunk.write(delta={"content": text})
        if await self._interrupted(request, reply, len(reply.chunks)):
            return response
        if reply.finish_reason is not None:
            await chunk.write(delta={}, finish_reason=reply.finish_reason)
        if (body.get("stream_options") or {}).get("include_usage"):
            await chunk.write_raw({"choices": [], "usage": _usage(body, reply)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _interrupted(self, request: web.Request, reply: StreamReply, sent: int) -> bool:
        """Apply `cut_after` / `stall_after` once `sent` content chunks are out; True if applied."""
        if reply.cut_after is not None and sent == min(reply.cut_after, len(reply.chunks)):
            if request.transport is not None:
                request.transport.close()  # mid-body: the client sees an incomplete chunked response
            return True
        if reply.stall_after is not None and sent == min(reply.stall_after, len(reply.chunks)):
            await self._stopping.wait()
            return True
        return False

    def _completion(self, body: dict[str, Any], reply: StreamReply) -> dict[str, Any]:
        message = {"role": "assistant", "content": reply.text}
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body.get("model", ""),
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
            "usage": _usage(body, reply),
        }


class _ChunkWriter:
    """Writes `data: {chunk}` SSE lines sharing one id, timestamp and model."""

    def __init__(self, response: web.StreamResponse, chunk_id: str, model: str) -> None:
        self._response = response
        self._envelope = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    async def write(self, *, delta: dict[str, Any], finish_reason: str | None = None) -> None:
        await self.write_raw({"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    async def write_raw(self, fields: dict[str, Any]) -> None:
        line = json.dumps({**self._envelope, **fields}, separators=(",", ":"))
        await self._response.write(f"data: {line}\n\n".encode())


def _usage(body: dict[str, Any], reply: StreamReply) -> dict[str, int]:
    if reply.usage is not None:
        prompt, completion = reply.usage
    else:
        prompt = sum(len(str(message.get("content", "")).split()) for message in body.get("messages", []))
        completion = len(reply.chunks)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _error_response(reply: ErrorReply) -> web.Response:
    return web.json_response(reply.body(), status=reply.status, headers=dict(reply.headers))


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback must not go through a proxy configured on the machine."""
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest_asyncio.fixture
async def fake_openai(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAI]:
    """A started FakeOpenAI; proxies cleared for the test."""
    clear_proxy_env(monkeypatch)
    async with FakeOpenAI() as fake:
        yield fake
