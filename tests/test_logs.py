"""Secrets never reach the logs, whatever the level and format."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from core.logs import JsonFormatter, RedactSecrets
from tests.fakes.openai_server import ErrorReply, FakeOpenAI, StreamReply

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "OPENAI_API_KEY": "sk-live-SECRET-0123456789abcdef",
    "SLACK_SIGNING_SECRET": "signing-SECRET-abcdef0123456789",
    "DISCORD_TOKEN": "discord.SECRET.token.abcdef012345",
}


def test_redaction_covers_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord(
        "t", logging.ERROR, __file__, 1, "key=%s", ("sk-live-SECRET-0123456789abcdef",), None
    )
    try:
        raise RuntimeError("boom sk-live-SECRET-0123456789abcdef")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    RedactSecrets(["sk-live-SECRET-0123456789abcdef"]).filter(record)
    line = JsonFormatter().format(record)
    assert "SECRET" not in line and json.loads(line)["message"] == "key=[redacted]"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_debug_logs_of_a_real_run_contain_no_secret(
    fake_openai: FakeOpenAI, tmp_path: Path, log_format: str
) -> None:
    fake_openai.enqueue(ErrorReply.rate_limited(), StreamReply.words("fine"), ErrorReply.invalid_api_key())
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "THREADLINE_"))
    }
    env.update(SECRETS)
    env.update(
        PYTHONPATH=str(ROOT),
        OPENAI_BASE_URL=fake_openai.base_url,
        THREADLINE_LOG_LEVEL="DEBUG",
        THREADLINE_LOG_FORMAT=log_format,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "chat",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(b"hello\nagain\n"), timeout=60)
    logs = err.decode()
    assert "fine" in out.decode()
    assert "DEBUG" in logs or '"level": "DEBUG"' in logs  # the run really logged at debug level
    for value in SECRETS.values():
        assert value not in logs and value not in out.decode()
    assert fake_openai.requests  # and the key did reach the provider, where it belongs
