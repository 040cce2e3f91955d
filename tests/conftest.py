"""Shared fixtures: databases (SQLite always, PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.fakes")

from core.app import Core  # noqa: E402
from core.config import Settings, load_settings  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402

pytest_plugins = ["tests.fakes.openai_server", "tests.slack_harness"]

for _proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_proxy, None)
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

# Settings read a `.env` file from the working directory: tests must not pick up a developer's.
os.environ.setdefault("THREADLINE_TEST", "1")

PG_ENV = "TEST_DATABASE_URL"
REQUIRE_PG_ENV = "THREADLINE_REQUIRE_POSTGRES"


def _pg_base_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get(REQUIRE_PG_ENV):
            pytest.fail(f"{REQUIRE_PG_ENV} is set but {PG_ENV} is not")
        return None
    return url


async def _create_pg_database(base_url: str) -> tuple[str, str]:
    import asyncpg

    from core.config import async_database_url

    plain = async_database_url(base_url).replace("postgresql+asyncpg://", "postgresql://")
    name = f"threadline_test_{secrets.token_hex(4)}"
    try:
        conn = await asyncpg.connect(plain)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get(REQUIRE_PG_ENV):
            pytest.fail(f"PostgreSQL at {PG_ENV} is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    scheme_and_auth, _, _db = plain.rpartition("/")
    return f"{scheme_and_auth}/{name}", plain


async def _drop_pg_database(url: str, admin_url: str) -> None:
    import asyncpg

    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each kind; PostgreSQL ones are created per test and dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'threadline.db'}"
        return
    base = _pg_base_url()
    if base is None:
        pytest.skip(f"{PG_ENV} not set")
    url, admin = await _create_pg_database(base)
    try:
        yield url
    finally:
        await _drop_pg_database(url, admin)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'threadline.db'}"


def make_settings(**overrides: object) -> Settings:
    """Settings for tests: never a developer's .env, fast LLM retries."""
    values: dict[str, object] = {"_env_file": None, "llm_max_attempts": 3}
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def core(database_url: str, fake_openai: FakeOpenAI) -> AsyncIterator[Core]:
    """A Core on an empty database of each kind, talking to the fake OpenAI server."""
    opened = await Core.open(
        make_settings(
            database_url=database_url, openai_base_url=fake_openai.base_url, openai_api_key="sk-test"
        )
    )
    try:
        yield opened
    finally:
        await opened.aclose()
