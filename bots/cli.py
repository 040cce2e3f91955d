"""The `threadline` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from core.app import Core
from core.config import ConfigError, Settings, load_settings
from core.logs import configure_logging
from core.personas.model import Persona
from core.personas.service import PersonaService
from core.storage.database import Database
from core.storage.migrate import (
    HEAD_REVISION,
    at_head,
    current_revision,
    one_line,
    upgrade,
    upgrade_if_needed,
    upgrade_in_child,
)

EXIT_USAGE = 2
NO_PLATFORM = (
    "no platform configured: set SLACK_BOT_TOKEN (with SLACK_APP_TOKEN or SLACK_SIGNING_SECRET) "
    "or DISCORD_TOKEN, or run `threadline chat` in a terminal"
)


class UsageError(Exception):
    """Wrong settings or arguments: one line, exit status 2."""


def _check_llm_settings(settings: Settings) -> None:
    if not settings.openai_api_key and not settings.openai_base_url:
        raise UsageError(
            "OPENAI_API_KEY: not set (needed for api.openai.com; for a local endpoint such as Ollama "
            "set OPENAI_BASE_URL instead)"
        )


def _check_platform_settings(settings: Settings) -> None:
    if settings.slack_enabled and not (settings.slack_app_token or settings.slack_signing_secret):
        raise UsageError(
            "SLACK_SIGNING_SECRET: not set; the Slack adapter needs SLACK_APP_TOKEN (Socket Mode) or "
            "SLACK_SIGNING_SECRET (HTTP events)"
        )
    if settings.slack_app_token and not settings.slack_app_token.startswith("xapp-"):
        raise UsageError("SLACK_APP_TOKEN: must be an app-level token starting with xapp-")


async def _open(settings: Settings) -> Core:
    return await Core.open(settings)


async def _prepare_schema(settings: Settings) -> None:
    """Bring the schema to head before `run` opens the core, without Alembic in this process.

    At head (every start but the first after an install or upgrade) this is one SQL query; otherwise
    a child process runs the upgrade, so the long-running service never holds Alembic's ~11 MiB.
    """
    db = Database(settings.database_url)
    try:
        ready = await at_head(db)
    except Exception as exc:
        from bots.doctor import redacted_url

        where = redacted_url(settings.database_url)
        raise UsageError(
            f"DATABASE_URL: cannot reach {where}: {_without_password(one_line(exc), settings)}"
        ) from None
    finally:
        await db.aclose()
    if ready:
        return
    reason = await upgrade_in_child(settings.database_url)
    if reason is not None:
        raise UsageError(
            f"database upgrade failed: {_without_password(reason, settings)} "
            "(`threadline db upgrade` shows the traceback)"
        )


def _without_password(message: str, settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    password = make_url(settings.database_url).password
    return message.replace(str(password), "***") if password else message


async def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    from bots.terminal import TerminalChat

    _check_llm_settings(settings)
    core = await _open(settings)
    try:
        chat = TerminalChat.for_local_user(core)
        if args.new:
            await core.engine.reset_conversation(chat.key)
        if args.persona:
            if await core.personas.get(args.persona) is None:
                names = ", ".join(p.name for p in await core.personas.list())
                raise UsageError(f"--persona: there is no persona named '{args.persona}' (known: {names})")
            await core.personas.set_thread(chat.key, args.persona)
        if sys.stdin.isatty():
            await chat.interactive()
            return 0
        return await chat.piped(sys.stdin)
    finally:
        await core.aclose()


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    if not (settings.slack_enabled or settings.discord_enabled):
        if sys.stdin.isatty() and sys.stdout.isatty():
            print(
                "No Slack or Discord configured (set SLACK_BOT_TOKEN or DISCORD_TOKEN to serve them): "
                "opening the terminal chat.",
                file=sys.stderr,
            )
            args.new = False
            args.persona = None
            return await cmd_chat(settings, args)
        raise UsageError(NO_PLATFORM)
    _check_llm_settings(settings)
    _check_platform_settings(settings)
    from bots.service import serve

    await _prepare_schema(settings)
    core = await Core.open(settings, migrate=False)
    try:
        await serve(core)
    finally:
        await core.aclose()
    return 0


async def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    db = Database(settings.database_url)
    try:
        if args.action == "upgrade":
            await upgrade(db)
            print(f"database at revision {await current_revision(db)} (head)")
        else:
            current = await current_revision(db)
            head = HEAD_REVISION
            state = "up to date" if current == head else f"behind head {head}: run `threadline db upgrade`"
            print(f"{current or 'empty (no schema)'} — {state}")
    finally:
        await db.aclose()
    return 0


@asynccontextmanager
async def _persona_store(settings: Settings) -> AsyncIterator[PersonaService]:
    """Personas without the rest of the core: managing them needs no LLM endpoint."""
    db = Database(settings.database_url)
    try:
        await upgrade_if_needed(db)
        personas = PersonaService(db, settings.default_model)
        await personas.seed_builtins()
        yield personas
    finally:
        await db.aclose()


async def cmd_personas(settings: Settings, args: argparse.Namespace) -> int:
    from core.personas.yaml_io import dump_personas  # PyYAML: not held by `threadline run`

    async with _persona_store(settings) as store:
        if args.action == "list":
            for persona in await store.list():
                print(f"{persona.name:<16} {persona.model:<24} {persona.description}")
        elif args.action == "show":
            found = await store.get(args.name)
            if found is None:
                raise UsageError(f"there is no persona named '{args.name}'")
            print(dump_personas([found]), end="")
        elif args.action == "export":
            print(dump_personas(await store.list()), end="")
        else:
            return await _import_personas(store, Path(args.file))
    return 0


async def _import_personas(store: PersonaService, path: Path) -> int:
    from core.personas.yaml_io import PersonaFileError, load_personas

    try:
        text = sys.stdin.read() if str(path) == "-" else await asyncio.to_thread(path.read_text, "utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    try:
        personas: list[Persona] = load_personas(text)
    except PersonaFileError as exc:
        raise UsageError(f"{path}: {exc}") from None
    for imported in personas:
        created = await store.upsert(imported)
        print(f"{'created' if created else 'updated'} {imported.name}")
        for warning in imported.warnings():
            print(f"  warning: {warning}", file=sys.stderr)
    return 0


async def cmd_discord(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.discord_enabled:
        raise UsageError("DISCORD_TOKEN: not set; it is needed to publish Discord commands")
    from bots.discord.sync import sync_commands

    print(await sync_commands(settings, args.guild))
    return 0


async def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    from bots.doctor import run_doctor

    return await run_doctor(settings)


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "run": cmd_run,
    "chat": cmd_chat,
    "db": cmd_db,
    "personas": cmd_personas,
    "doctor": cmd_doctor,
    "discord": cmd_discord,
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="threadline", description="LLM personas in Slack, Discord and the terminal."
    )
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the service: schema upgrade, adapters, HTTP server")
    chat = sub.add_parser("chat", help="talk to a persona in the terminal (reads stdin when piped)")
    chat.add_argument("--persona", metavar="NAME", help="persona for this conversation")
    chat.add_argument("--new", action="store_true", help="start a fresh conversation")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "current"])
    personas = sub.add_parser("personas", help="list, show, import or export personas")
    actions = personas.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="one line per persona")
    actions.add_parser("show", help="one persona as YAML").add_argument("name")
    actions.add_parser(
        "import", help="create or update personas from a YAML file (- for stdin)"
    ).add_argument("file")
    actions.add_parser("export", help="every persona as YAML on stdout")
    sub.add_parser("doctor", help="check configuration, database, the LLM endpoint and the platforms")
    discord_cmd = sub.add_parser("discord", help="Discord operations")
    discord_actions = discord_cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    sync = discord_actions.add_parser("sync", help="publish the slash commands now")
    sync.add_argument(
        "--guild", type=int, metavar="ID", help="publish to one server only (instant, for development)"
    )
    return root


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux and macOS): the same asyncio, with the event loop and its
    sockets in C, which cuts the bot's CPU per reply (bench/README.md); the standard loop elsewhere."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings)
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            status = runner.run(COMMANDS[args.command](settings, args))
    except (ConfigError, UsageError) as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status)


if __name__ == "__main__":
    main()
