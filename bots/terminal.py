"""The terminal adapter: `threadline chat`, streaming token by token through the same output port."""

from __future__ import annotations

import asyncio
import getpass
import sys
from dataclasses import dataclass
from typing import TextIO

from core.app import Core
from core.engine import Turn
from core.personas.service import UnknownPersona
from core.surface import MarkdownFlavor, SurfaceLimits
from core.types import Author, ConversationKey

TERMINAL_LIMITS = SurfaceLimits(
    max_length=1_000_000,
    length_unit="chars",
    min_edit_interval=0.0,
    markdown=MarkdownFlavor.PLAIN,
    streaming_indicator="",
    placeholder="",
)
HELP = """Commands:
  /personas        list the personas
  /persona NAME    talk to another persona in this conversation
  /reset           forget this conversation's history
  /help            this help
  /quit            leave (Ctrl-D works too)"""


class TerminalSurface:
    """Prints what the renderer shows; edits that extend the text print only the new suffix."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown: dict[str, str] = {}
        self._count = 0

    @property
    def limits(self) -> SurfaceLimits:
        return TERMINAL_LIMITS

    def render(self, markdown: str) -> str:
        return markdown

    async def post(self, text: str) -> str:
        self._count += 1
        message_id = f"term-{self._count}"
        self._shown[message_id] = ""
        await self.edit(message_id, text)
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        shown = self._shown.get(message_id, "")
        if text.startswith(shown):
            self._out.write(text[len(shown) :])
        else:
            self._out.write("\n" + text)
        self._out.flush()
        self._shown[message_id] = text


@dataclass(frozen=True, slots=True)
class TerminalChat:
    core: Core
    key: ConversationKey
    author: Author

    @classmethod
    def for_local_user(cls, core: Core, thread: str = "default") -> TerminalChat:
        user = getpass.getuser()
        return cls(core, ConversationKey("terminal", "local", user, thread), Author(user, user))

    async def command(self, line: str, out: TextIO) -> bool:
        """Run an in-chat command; False when the chat should end."""
        name, _, argument = line[1:].partition(" ")
        argument = argument.strip()
        if name in {"quit", "exit", "q"}:
            return False
        if name == "help":
            out.write(HELP + "\n")
        elif name == "personas":
            current = (await self.core.personas.resolve(self.key)).persona.name
            for persona in await self.core.personas.list():
                mark = "*" if persona.name == current else " "
                out.write(f"{mark} {persona.name:<16} {persona.model:<20} {persona.description}\n")
        elif name == "persona":
            await self._switch_persona(argument, out)
        elif name == "reset":
            forgotten = await self.core.engine.reset_conversation(self.key)
            out.write("History forgotten.\n" if forgotten else "Nothing to forget yet.\n")
        else:
            out.write(f"Unknown command /{name}. Type /help for the list.\n")
        out.flush()
        return True

    async def _switch_persona(self, name: str, out: TextIO) -> None:
        if not name:
            resolved = await self.core.personas.resolve(self.key)
            out.write(f"Current persona: {resolved.persona.name} ({resolved.source.value}).\n")
            return
        try:
            persona = await self.core.personas.set_thread(self.key, name)
        except UnknownPersona as exc:
            out.write(f"{exc} Type /personas for the list.\n")
            return
        assert persona is not None
        out.write(f"Now talking to {persona.name} ({persona.model}).\n")

    async def say(self, text: str, out: TextIO) -> str:
        result = await self.core.engine.handle_turn(Turn(self.key, self.author, text), TerminalSurface(out))
        out.write("\n")
        out.flush()
        return result.status

    async def interactive(self, out: TextIO = sys.stdout) -> None:
        resolved = await self.core.personas.resolve(self.key)
        out.write(f"Threadline — talking to {resolved.persona.name}. /help for commands, Ctrl-D to leave.\n")
        while True:
            try:
                line = await asyncio.to_thread(input, "\nyou> ")
            except EOFError:
                out.write("\n")
                return
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not await self.command(line, out):
                    return
                continue
            out.write("\n")
            await self.say(line, out)

    async def piped(self, source: TextIO, out: TextIO = sys.stdout) -> int:
        """One message per input line, one reply per message; exit status 1 if any turn failed."""
        failed = False
        while True:
            line = await asyncio.to_thread(source.readline)
            if not line:
                return 1 if failed else 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not await self.command(line, out):
                    return 1 if failed else 0
                continue
            status = await self.say(line, out)
            failed = failed or status in {"failed", "refused"}
