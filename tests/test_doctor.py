"""`threadline doctor` says what works and what is wrong."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent


async def doctor(cwd: Path, **env_overrides: str) -> tuple[int, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "THREADLINE_"))
    }
    env.update(PYTHONPATH=str(ROOT), **env_overrides)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "doctor",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_doctor_all_good_then_each_problem_named(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    code, out = await doctor(tmp_path, OPENAI_BASE_URL=fake_openai.base_url, OPENAI_API_KEY="sk-test")
    assert code == 0, out
    assert "[ok  ] llm endpoint:" in out and "gpt-4o-mini" in out
    assert "reachable and empty: `threadline run` creates the schema" in out

    fake_openai.api_key = "sk-right"
    code, out = await doctor(tmp_path, OPENAI_BASE_URL=fake_openai.base_url, OPENAI_API_KEY="sk-wrong")
    assert code == 1 and "[FAIL] llm endpoint" in out and "API key" in out and "sk-wrong" not in out

    code, out = await doctor(tmp_path, OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_API_KEY="k")
    assert code == 1 and "[FAIL] llm endpoint" in out


async def test_doctor_reports_schema_state(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    import sqlite3

    env = {"OPENAI_BASE_URL": fake_openai.base_url, "OPENAI_API_KEY": "k"}
    upgrade = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "db",
        "upgrade",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await upgrade.wait() == 0
    code, out = await doctor(tmp_path, **env)
    assert code == 0 and "(up to date)" in out
    with sqlite3.connect(tmp_path / "threadline.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    code, out = await doctor(tmp_path, **env)
    assert code == 1 and "[FAIL] database" in out and "newer than this Threadline" in out
