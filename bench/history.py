"""Stored history: databases pre-filled with SQL (after `threadline db upgrade`) before the bot starts.

A stored turn is one user message and one assistant answer (~870 characters), with exact token
counts, as the engine itself would have stored them.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table

from bench.procs import run_cli
from bench.replies import answer, prompt
from core.personas.builtin import builtin_personas
from core.storage.models import ConversationRow, MessageRow, PersonaRow
from core.tokens import count_message_tokens, encoding_name_for_model
from core.types import ConversationKey

MODEL = "gpt-4o-mini"
PERSON = "Alice"
VARIANTS = 50
BENCH_DATABASE = "threadline_bench"


@dataclass(frozen=True)
class Stored:
    key: ConversationKey
    turns: int
    history_limit: int | None = None  # a thread persona with this history limit (messages)


def _table(row: type[Any]) -> Table:
    table = row.__table__
    assert isinstance(table, Table)
    return table


@functools.cache
def _variants() -> tuple[list[str], list[int], list[str], list[int]]:
    users = [f"{PERSON}: {prompt(f'h{i}')}" for i in range(VARIANTS)]
    answers = [answer(f"h{i}") for i in range(VARIANTS)]
    user_tokens = [count_message_tokens("user", text, MODEL) for text in users]
    answer_tokens = [count_message_tokens("assistant", text, MODEL) for text in answers]
    return users, user_tokens, answers, answer_tokens


def _messages(conversation_id: int, turns: int) -> Iterator[dict[str, Any]]:
    users, user_tokens, answers, answer_tokens = _variants()
    common = {
        "conversation_id": conversation_id,
        "token_encoding": encoding_name_for_model(MODEL),
        "status": "complete",
    }
    for turn in range(turns):
        variant = turn % VARIANTS
        yield {
            **common,
            "role": "user",
            "author_id": "U0001",
            "author_name": PERSON,
            "content": users[variant],
            "token_count": user_tokens[variant],
            "source_message_id": f"m{conversation_id}-{turn}",
        }
        yield {
            **common,
            "role": "assistant",
            "author_name": "assistant",
            "content": answers[variant],
            "token_count": answer_tokens[variant],
            "finish_reason": "stop",
            "model": MODEL,
            "persona_name": "assistant",
            "completion_tokens": 147,
        }


def _full_row(table: Table, given: dict[str, Any], *, now: datetime) -> dict[str, Any]:
    """Every column but the generated id: given values, else the model's scalar default, else NULL."""
    return {**_defaults(table, now), **given}


@functools.cache
def _defaults(table: Table, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column in table.columns:
        if column.primary_key and column.name == "id":
            continue
        default = column.default
        if column.name.endswith("_at"):
            row[column.name] = now
        elif default is not None and getattr(default, "is_scalar", False):
            row[column.name] = default.arg  # type: ignore[attr-defined]
        elif default is not None and getattr(default, "is_callable", False):
            row[column.name] = default.arg(None)  # type: ignore[attr-defined]
        else:
            row[column.name] = None
    return row


def _persona_fields(limit: int) -> dict[str, Any]:
    base = builtin_personas(MODEL)[0]
    return {
        "name": f"bench-last-{limit}",
        "description": f"The default assistant, sending at most {limit} earlier messages",
        "system_prompt": base.system_prompt,
        "model": MODEL,
        "response_format": "text",
        "history_limit": limit,
        "builtin": False,
    }


def _conversation_fields(key: ConversationKey, persona_id: int | None) -> dict[str, Any]:
    return {
        "platform": key.platform,
        "workspace": key.workspace,
        "channel": key.channel,
        "thread": key.thread,
        "persona_id": persona_id,
        "history_start_id": 0,
    }


# --------------------------------------------------------------------------- SQLite


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


def _sqlite_insert(
    db: sqlite3.Connection, table: Table, rows: Sequence[dict[str, Any]] | Iterator[dict[str, Any]]
) -> int:
    first = True
    names: list[str] = []
    last = 0
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        if first:
            names = list(row)
            first = False
        batch.append(tuple(_sqlite_value(row[name]) for name in names))
        if len(batch) >= 5000:
            last = _sqlite_flush(db, table, names, batch)
    if batch:
        last = _sqlite_flush(db, table, names, batch)
    return last


def _sqlite_flush(
    db: sqlite3.Connection, table: Table, names: list[str], batch: list[tuple[Any, ...]]
) -> int:
    """Insert the rows; the id of the last one."""
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
    cursor = db.execute(sql, batch[0]) if len(batch) == 1 else db.executemany(sql, batch)
    batch.clear()
    last = (
        cursor.lastrowid
        if len(names) and cursor.lastrowid
        else db.execute("SELECT last_insert_rowid()").fetchone()[0]
    )
    return int(last)


def prefill_sqlite(path: Path, stored: Sequence[Stored], workdir: Path) -> None:
    run_cli(["db", "upgrade"], {"DATABASE_URL": f"sqlite:///{path}"}, workdir)
    now = datetime.now(UTC)
    db = sqlite3.connect(path)
    try:
        personas = {
            limit: _sqlite_insert(
                db, _table(PersonaRow), [_full_row(_table(PersonaRow), _persona_fields(limit), now=now)]
            )
            for limit in sorted({item.history_limit for item in stored if item.history_limit is not None})
        }
        table = _table(ConversationRow)
        _sqlite_insert(
            db,
            table,
            (
                _full_row(
                    table, _conversation_fields(item.key, personas.get(item.history_limit or 0)), now=now
                )
                for item in stored
            ),
        )
        ids = {
            (platform, workspace, channel, thread): conversation_id
            for conversation_id, platform, workspace, channel, thread in db.execute(
                "SELECT id, platform, workspace, channel, thread FROM conversations"
            )
        }
        messages = _table(MessageRow)
        rows = (
            _full_row(messages, message, now=now)
            for item in stored
            for message in _messages(ids[_key_tuple(item.key)], item.turns)
        )
        _sqlite_insert(db, messages, rows)
        db.commit()
    finally:
        db.close()


def _key_tuple(key: ConversationKey) -> tuple[str, str, str, str]:
    return (key.platform, key.workspace, key.channel, key.thread)


# --------------------------------------------------------------------------- PostgreSQL


async def recreate_postgres(admin_url: str, *, create: bool = True) -> str:
    """A fresh, empty bench database next to `admin_url`'s (or none: `create=False`); its URL."""
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", BENCH_DATABASE
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}"')
        if create:
            await conn.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + BENCH_DATABASE


async def prefill_postgres(url: str, stored: Sequence[Stored], workdir: Path) -> None:
    import asyncpg

    run_cli(["db", "upgrade"], {"DATABASE_URL": url}, workdir)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(url)
    try:
        personas: dict[int, int] = {}
        persona_table = _table(PersonaRow)
        for limit in sorted({item.history_limit for item in stored if item.history_limit is not None}):
            row = _full_row(persona_table, _persona_fields(limit), now=now)
            sql = (
                f"INSERT INTO {persona_table.name} ({', '.join(row)}) "
                f"VALUES ({', '.join(f'${i + 1}' for i in range(len(row)))}) RETURNING id"
            )
            personas[limit] = int(await conn.fetchval(sql, *row.values()))

        async def copy(table: Table, rows: Iterator[dict[str, Any]]) -> None:
            first = next(rows, None)
            if first is None:
                return
            names = list(first)
            records = [
                tuple(json.dumps(r[n]) if isinstance(r[n], list | dict) else r[n] for n in names)
                for r in (first, *rows)
            ]
            await conn.copy_records_to_table(table.name, records=records, columns=names)

        conversations = _table(ConversationRow)
        await copy(
            conversations,
            (
                _full_row(
                    conversations,
                    _conversation_fields(item.key, personas.get(item.history_limit or 0)),
                    now=now,
                )
                for item in stored
            ),
        )
        ids = {
            (r["platform"], r["workspace"], r["channel"], r["thread"]): int(r["id"])
            for r in await conn.fetch("SELECT id, platform, workspace, channel, thread FROM conversations")
        }
        messages = _table(MessageRow)
        await copy(
            messages,
            (
                _full_row(messages, message, now=now)
                for item in stored
                for message in _messages(ids[_key_tuple(item.key)], item.turns)
            ),
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
