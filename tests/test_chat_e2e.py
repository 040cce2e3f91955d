"""`threadline chat` end to end: a real process, piped stdin, the fake OpenAI server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes.openai_server import FakeOpenAI, StreamReply

ROOT = Path(__file__).resolve().parent.parent


async def chat(fake: FakeOpenAI, cwd: Path, stdin: str, *args: str) -> tuple[int, str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "THREADLINE_"))
    }
    env.update(PYTHONPATH=str(ROOT), OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-test", USER="ada")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "chat",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_piped_chat_streams_remembers_and_resets(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.enqueue(
        StreamReply.words("Paris is the capital of France."),
        StreamReply.words("About 2.1 million people live there."),
    )
    code, out, err = await chat(
        fake_openai, tmp_path, "What is the capital of France?\nHow many live there?\n"
    )
    assert code == 0, err
    assert out.splitlines() == ["Paris is the capital of France.", "About 2.1 million people live there."]
    second = fake_openai.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[1]["content"] == "ada: What is the capital of France?"
    assert second[2]["content"] == "Paris is the capital of France."

    # A new run remembers the conversation; --new forgets it.
    code, out, _ = await chat(fake_openai, tmp_path, "And Germany?\n")
    assert len(fake_openai.requests[2]["messages"]) == 6
    code, out, _ = await chat(fake_openai, tmp_path, "Hello again\n", "--new")
    assert [m["role"] for m in fake_openai.requests[3]["messages"]] == ["system", "user"]
    assert out.strip() == "Echo: ada: Hello again"


async def test_piped_chat_persona_and_in_chat_commands(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    code, out, err = await chat(
        fake_openai,
        tmp_path,
        "/personas\n/persona extractor\nName: Bob, age 41\n/reset\n/persona nobody\n",
        "--new",
    )
    assert code == 0, err
    assert "* assistant" in out and "  extractor" in out
    assert "Now talking to extractor" in out
    request = fake_openai.requests[0]
    assert request["response_format"] == {"type": "json_object"}
    assert "JSON object" in request["messages"][0]["content"]
    assert "History forgotten." in out
    assert "There is no persona named 'nobody'." in out

    code, _, err = await chat(fake_openai, tmp_path, "hi\n", "--persona", "nobody")
    assert code == 2 and "--persona" in err and "nobody" in err


async def test_failing_provider_is_shown_and_exit_status_is_1(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    from tests.fakes.openai_server import ErrorReply

    fake_openai.enqueue(ErrorReply.invalid_api_key())
    code, out, _ = await chat(fake_openai, tmp_path, "hello\n")
    assert code == 1
    assert "API key" in out
