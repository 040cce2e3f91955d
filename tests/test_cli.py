"""The `threadline` command as an operator uses it: exit codes, one-line errors, personas, db."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

THREADLINE = [sys.executable, "-m", "bots.cli"]
ROOT = Path(__file__).resolve().parent.parent


def clean_env() -> dict[str, str]:
    """The environment without a developer's platform, model or database settings."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "THREADLINE_", "DATABASE_URL"))
    }
    clean["PYTHONPATH"] = str(ROOT)
    return clean


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    clean = clean_env()
    clean.update(env or {})
    return subprocess.run(
        THREADLINE + args, cwd=cwd, env=clean, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_bad_setting_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    result = run_cli(["db", "current"], tmp_path, {"THREADLINE_PORT": "abc"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "threadline: THREADLINE_PORT: Input should be a valid integer, unable to parse string as an integer"
    ]
    result = run_cli(["db", "current"], tmp_path, {"DATABASE_URL": "mysql://x/y"})
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("THREADLINE_LOG_LEVEL=loud\n")
    result = run_cli(["db", "current"], tmp_path)
    assert result.returncode == 2 and "THREADLINE_LOG_LEVEL" in result.stderr


def test_run_without_platform_or_terminal_exits_2_saying_what_to_set(tmp_path: Path) -> None:
    result = run_cli(["run"], tmp_path, {"OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr and "DISCORD_TOKEN" in result.stderr


def test_chat_without_llm_endpoint_exits_2(tmp_path: Path) -> None:
    result = run_cli(["chat"], tmp_path, stdin="hello\n")
    assert result.returncode == 2 and "OPENAI_API_KEY" in result.stderr


def test_slack_without_signing_secret_or_app_token_exits_2(tmp_path: Path) -> None:
    result = run_cli(["run"], tmp_path, {"OPENAI_API_KEY": "sk-test", "SLACK_BOT_TOKEN": "xoxb-1"})
    assert result.returncode == 2 and "SLACK_SIGNING_SECRET" in result.stderr


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    result = run_cli(["db", "current"], tmp_path)
    assert result.returncode == 0 and "empty" in result.stdout
    result = run_cli(["db", "upgrade"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "threadline.db").exists()
    result = run_cli(["db", "current"], tmp_path)
    assert "up to date" in result.stdout


def test_personas_list_show_export_import(tmp_path: Path) -> None:
    listed = run_cli(["personas", "list"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        "assistant",
        "extractor",
        "legal-info",
        "python",
        "support",
    ]
    shown = run_cli(["personas", "show", "extractor"], tmp_path)
    assert "response_format: json_object" in shown.stdout
    missing = run_cli(["personas", "show", "nobody"], tmp_path)
    assert missing.returncode == 2 and "nobody" in missing.stderr

    exported = run_cli(["personas", "export"], tmp_path).stdout
    assert exported.count("- name:") == 5
    new = (
        "personas:\n  - name: pirate\n    system_prompt: Talk like a pirate.\n"
        "    model: gpt-4o\n    temperature: 1.2\n    top_p: 0.5\n"
    )
    (tmp_path / "p.yaml").write_text(new)
    imported = run_cli(["personas", "import", "p.yaml"], tmp_path)
    assert imported.returncode == 0 and "created pirate" in imported.stdout
    assert "only one" in imported.stderr  # temperature and top_p both changed
    again = run_cli(["personas", "import", "-"], tmp_path, stdin=new.replace("1.2", "0.9"))
    assert "updated pirate" in again.stdout
    bad = run_cli(["personas", "import", "-"], tmp_path, stdin=new.replace("1.2", "7"))
    assert bad.returncode == 2
    assert "temperature must be a number between 0 and 2" in bad.stderr
    assert run_cli(["personas", "import", "nope.yaml"], tmp_path).returncode == 2


@pytest.mark.parametrize("argv", [["personas"], ["db", "sideways"]])
def test_usage_errors_exit_2(tmp_path: Path, argv: list[str]) -> None:
    assert run_cli(argv, tmp_path).returncode == 2


def test_shard_settings_are_checked(tmp_path: Path) -> None:
    result = run_cli(["db", "current"], tmp_path, {"THREADLINE_DISCORD_SHARD_IDS": "0,1"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "threadline: THREADLINE_DISCORD_SHARD_IDS needs THREADLINE_DISCORD_SHARD_COUNT"
    )
    result = run_cli(
        ["db", "current"],
        tmp_path,
        {"THREADLINE_DISCORD_SHARD_IDS": "0,2", "THREADLINE_DISCORD_SHARD_COUNT": "2"},
    )
    assert result.returncode == 2 and "below the shard count 2" in result.stderr


def test_discord_sync_without_token_exits_2(tmp_path: Path) -> None:
    result = run_cli(["discord", "sync"], tmp_path)
    assert result.returncode == 2 and "DISCORD_TOKEN" in result.stderr


# `threadline run` up to the point where it would serve: the adapters are built, then the process
# prints what it has imported and exits (bots.service.serve is replaced).
RUN_PROBE = """
import json, sys
import bots.service
from aiohttp import web

async def probe(core, stop=None):
    bots.service.build_adapters(core, web.Application())
    print(json.dumps(sorted(sys.modules)))

bots.service.serve = probe
from bots.cli import main
main(["run"])
"""

PLATFORMS = {
    "slack": {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s" * 32},
    "discord": {"DISCORD_TOKEN": "d" * 59},
}


@pytest.mark.parametrize("platform", ["slack", "discord"])
def test_run_holds_neither_alembic_nor_unused_platform_libraries(tmp_path: Path, platform: str) -> None:
    """Memory: Alembic (~11 MiB) upgrades a fresh database in a child process; Slack's libraries
    load only for Slack, discord.py only for Discord, asyncpg only for PostgreSQL."""
    env = {**clean_env(), "OPENAI_API_KEY": "sk-test", **PLATFORMS[platform]}
    for start in ("fresh database", "database at head"):
        result = subprocess.run(
            [sys.executable, "-c", RUN_PROBE],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{start}: {result.stderr}"
        modules = set(json.loads(result.stdout.splitlines()[-1]))
        tops = {name.split(".")[0] for name in modules}
        assert not tops & {"alembic", "mako", "asyncpg"}, start
        if platform == "slack":
            assert "slack_bolt" in tops and "discord" not in tops
        else:
            assert "discord" in tops and not tops & {"slack_bolt", "slack_sdk"}
    assert "up to date" in run_cli(["db", "current"], tmp_path).stdout


def test_run_whose_schema_cannot_be_upgraded_exits_2_in_one_line(tmp_path: Path) -> None:
    assert run_cli(["db", "upgrade"], tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "threadline.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    result = run_cli(["run"], tmp_path, {"OPENAI_API_KEY": "sk-test", **PLATFORMS["slack"]})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("threadline: database upgrade failed: "), lines
    assert "9999" in lines[0]


@pytest.mark.parametrize(
    "url",
    ["sqlite:////nonexistent-dir/threadline.db", "postgresql://threadline:s3cret-pw@127.0.0.1:9/threadline"],
)
def test_run_with_unreachable_database_exits_2_in_one_line(tmp_path: Path, url: str) -> None:
    env = {"OPENAI_API_KEY": "sk-test", "DATABASE_URL": url, **PLATFORMS["slack"]}
    result = run_cli(["run"], tmp_path, env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("threadline: DATABASE_URL: cannot reach "), lines
    assert "s3cret-pw" not in result.stderr


def test_commands_run_on_uvloop_where_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from bots.cli import new_event_loop

    loop = new_event_loop()
    try:
        expected = "uvloop" if sys.platform != "win32" else "asyncio"
        assert type(loop).__module__.split(".")[0] == expected
    finally:
        loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed: the standard loop
    loop = new_event_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


def test_discord_py_parses_json_with_orjson() -> None:
    """A dependency for speed only: discord.py uses it when it can import it."""
    import discord.utils

    assert discord.utils.HAS_ORJSON
