"""The fake model, in its own process so its CPU is never the bot's (nor the platform fakes').

    python -m bench.model [--interval 0.02] [--first-delay 0.02]

prints one JSON line `{"port": N}` and serves tests/fakes/openai_server.py's FakeOpenAI (same wire
format) until SIGTERM, answering each prompt's tag with `bench.replies.answer(tag)`, one word per
chunk every `interval` seconds on an absolute schedule (no drift). `GET /_bench/records` returns what
it saw: per chat-completion request its arrival time, when the first and last content chunks were
written (time.monotonic(), the same clock in every process of the machine), the request's size, and
how late the schedule ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any

from aiohttp import web

from bench.replies import answer, chunks, tag_of
from tests.fakes.openai_server import SSE_HEADERS, FakeOpenAI, StreamReply


class BenchModel(FakeOpenAI):
    def __init__(self, *, interval: float, first_delay: float) -> None:
        super().__init__(default=self._reply)
        self.interval = interval
        self.first_delay = first_delay
        self.records: list[dict[str, Any]] = []

    @staticmethod
    def _reply(body: dict[str, Any]) -> StreamReply:
        messages = body.get("messages") or [{}]
        tag = tag_of(str(messages[-1].get("content", ""))) or "untagged"
        return StreamReply(chunks=chunks(answer(tag)))

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/_bench/records", self._records)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _records(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response({"count": len(self.records), "records": self.records[since:]})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        raw = await request.read()
        body: dict[str, Any] = json.loads(raw)
        messages = body.get("messages") or [{}]
        record: dict[str, Any] = {
            "arrived": arrived,
            "tag": tag_of(str(messages[-1].get("content", ""))),
            "messages": len(messages),
            "bytes": len(raw),
            "first_chunk": None,
            "last_chunk": None,
            "late_max": 0.0,
            "disconnected": False,
        }
        self.records.append(record)
        reply = self._reply(body)
        if not body.get("stream"):
            return web.json_response(self._completion(body, reply))
        try:
            return await self._paced_stream(request, body, reply, record)
        except (asyncio.CancelledError, ConnectionResetError):
            record["disconnected"] = True
            raise

    async def _paced_stream(
        self, request: web.Request, body: dict[str, Any], reply: StreamReply, record: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        envelope = {
            "id": f"chatcmpl-bench-{len(self.records)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", ""),
        }

        def line(fields: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps({**envelope, **fields}, separators=(",", ":")).encode() + b"\n\n"

        def delta(content: dict[str, Any], finish: str | None = None) -> bytes:
            return line({"choices": [{"index": 0, "delta": content, "finish_reason": finish}]})

        lines = [delta({"content": text}) for text in reply.chunks]
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.first_delay)
        await response.write(delta({"role": "assistant", "content": ""}))
        start = loop.time()
        late = 0.0
        for index, data in enumerate(lines):
            if index:
                delay = start + index * self.interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    late = max(late, -delay)
            if index == 0:
                record["first_chunk"] = time.monotonic()
            await response.write(data)
        record["last_chunk"] = time.monotonic()
        record["late_max"] = late
        await response.write(delta({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": len(lines),
                "total_tokens": prompt + len(lines),
            }
            await response.write(line({"choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def serve(interval: float, first_delay: float) -> None:
    model = BenchModel(interval=interval, first_delay=first_delay)
    await model.start()
    print(json.dumps({"port": model.port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await model.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model")
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--first-delay", type=float, default=0.02)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.interval, args.first_delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
