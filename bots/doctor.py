"""`threadline doctor`: check configuration, database, tokenizer and the LLM endpoint; say what is wrong."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from core.app import llm_client
from core.config import Settings
from core.llm import LLMError
from core.storage.database import Database
from core.storage.migrate import HEAD_REVISION, current_revision, known_revisions
from core.tokens import count_tokens

OK, FAIL, INFO = "ok  ", "FAIL", "info"


def redacted_url(url: str) -> str:
    """The URL without its user and password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


async def check_database(settings: Settings) -> tuple[bool, str]:
    db = Database(settings.database_url)
    try:
        current = await current_revision(db)
    except Exception as exc:
        return False, f"cannot reach {redacted_url(settings.database_url)}: {type(exc).__name__}: {exc}"
    finally:
        await db.aclose()
    where = redacted_url(settings.database_url)
    if current is None:
        return True, f"{where} is reachable and empty: `threadline run` creates the schema"
    if current == HEAD_REVISION:
        return True, f"{where} at revision {current} (up to date)"
    if current in known_revisions():
        return True, f"{where} at revision {current}: upgraded at the next start (or `threadline db upgrade`)"
    return False, f"{where} has schema {current}, newer than this Threadline: upgrade Threadline"


async def check_tokenizer(settings: Settings) -> tuple[bool, str]:
    started = time.perf_counter()
    count_tokens("hello world", settings.default_model)
    return True, f"offline encodings loaded in {(time.perf_counter() - started) * 1000:.0f} ms"


async def check_llm(settings: Settings) -> tuple[bool, str]:
    if not settings.openai_api_key and not settings.openai_base_url:
        return False, "OPENAI_API_KEY is not set (or set OPENAI_BASE_URL for a local endpoint)"
    client = llm_client(settings)
    try:
        summary = await client.check()
    except LLMError as exc:
        return False, exc.message
    finally:
        await client.aclose()
    return True, summary


def platform_lines(settings: Settings) -> list[str]:
    lines: list[str] = []
    if settings.slack_enabled:
        mode = "Socket Mode" if settings.slack_app_token else "HTTP events at /slack/events"
        if not (settings.slack_app_token or settings.slack_signing_secret):
            mode = "needs SLACK_APP_TOKEN or SLACK_SIGNING_SECRET"
        lines.append(f"Slack: {mode}")
    if settings.discord_enabled:
        lines.append("Discord: configured")
    if not lines:
        lines.append(
            "no platform configured (SLACK_BOT_TOKEN / DISCORD_TOKEN); `threadline chat` still works"
        )
    return lines


async def run_doctor(settings: Settings) -> int:
    checks: list[tuple[str, Callable[[Settings], Awaitable[tuple[bool, str]]]]] = [
        ("database", check_database),
        ("tokenizer", check_tokenizer),
        ("llm endpoint", check_llm),
    ]
    if settings.discord_enabled:
        from bots.discord.doctor import check_discord

        checks.append(("discord", check_discord))
    print(f"[{OK}] configuration: read (default model {settings.default_model})")
    for line in platform_lines(settings):
        print(f"[{INFO}] {line}")
    failures = 0
    for name, check in checks:
        try:
            ok, detail = await check(settings)
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        failures += not ok
        print(f"[{OK if ok else FAIL}] {name}: {detail}")
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 0 if not failures else 1
