"""`/persona` (name configurable with THREADLINE_SLACK_PERSONA_COMMAND) and the persona modal's submission.

    /persona list                  personas, the channel's current one marked
    /persona show                  the channel's persona, where it comes from, the channel's settings
    /persona use NAME              the channel's persona                       (admins)
    /persona reset                 the channel back to the workspace/default    (admins)
    /persona create                a modal to create a persona                 (admins)
    /persona edit NAME             a modal to edit a persona                   (admins)
    /persona delete NAME           delete a persona                            (admins)
    /persona default NAME|reset    the workspace default persona               (admins)
    /persona followups on|off      answer follow-ups in threads without a mention (channel; admins)
    /persona bots on|off           answer other bots that mention it           (channel; admins)

Admins: workspace admins and owners (users.info) and the ids in THREADLINE_ADMINS.
Every answer is ephemeral (only the person who ran the command sees it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.events import PLATFORM
from bots.slack.modals import INPUT_MAX_LENGTH, ModalContext, block_errors, persona_modal, submitted_fields
from bots.slack.mrkdwn import escape
from bots.slack.users import UserDirectory
from core.app import Core
from core.personas.builtin import DEFAULT_PERSONA_NAME
from core.personas.model import Persona, PersonaInvalid
from core.personas.service import (
    DefaultPersonaRequired,
    PersonaExists,
    PersonaSource,
    UnknownPersona,
)
from core.types import ConversationKey

log = logging.getLogger("threadline.slack")

NOT_ALLOWED = (
    "Only workspace admins and owners (and the people listed in THREADLINE_ADMINS) can change "
    "personas. Ask one of them, or use `{command} show` to see the current one."
)
_SOURCES = {
    PersonaSource.THREAD: "set for this thread",
    PersonaSource.CHANNEL: "set for this channel",
    PersonaSource.WORKSPACE: "the workspace default",
    PersonaSource.DEFAULT: "the built-in default",
}
_PROMPT_PREVIEW = 1500
# Subcommand → number of arguments. list and show are for everyone; the others change personas (admins).
_ARITY = {
    "list": 0,
    "show": 0,
    "use": 1,
    "reset": 0,
    "create": 0,
    "edit": 1,
    "delete": 1,
    "default": 1,
    "followups": 1,
    "bots": 1,
}
_SWITCH = {"on": True, "off": False}
# Channel flags settable with `/persona <word> on|off`: the word → (setting, what it means when on/off).
_FLAGS = {
    "followups": (
        "follow_up_in_threads",
        "Follow-ups are *on*: in threads I talk in, I answer every message, no mention needed.",
        "Follow-ups are *off*: in this channel I answer only messages that mention me.",
    ),
    "bots": (
        "allow_bots",
        "Other bots are *allowed*: I answer bots that mention me in this channel.",
        "Other bots are *ignored* in this channel.",
    ),
}


def usage(command: str) -> str:
    return "\n".join(
        [
            f"*{command}* — choose who answers in this channel:",
            f"• `{command} list` — all personas",
            f"• `{command} show` — this channel's persona and where it comes from",
            f"• `{command} use NAME` — use a persona in this channel _(admins)_",
            f"• `{command} reset` — back to the workspace default _(admins)_",
            f"• `{command} create` — create a persona _(admins)_",
            f"• `{command} edit NAME` — edit a persona _(admins)_",
            f"• `{command} delete NAME` — delete a persona _(admins)_",
            f"• `{command} default NAME` or `{command} default reset` — the workspace default _(admins)_",
            f"• `{command} followups on|off` — answer thread follow-ups without a mention _(admins)_",
            f"• `{command} bots on|off` — answer other bots that mention me _(admins)_",
            "To forget a thread's history, mention me in the thread with the word `reset`.",
        ]
    )


Reply = Callable[[str], Awaitable[None]]


async def can_manage(core: Core, users: UserDirectory, user_id: str) -> bool:
    """Workspace admins and owners, and the ids in THREADLINE_ADMINS (personas, settings, schedules)."""
    return core.settings.is_admin(user_id) or await users.is_workspace_admin(user_id)


class PersonaCommands:
    def __init__(self, core: Core, users: UserDirectory) -> None:
        self._core = core
        self._users = users
        self.command = core.settings.slack_persona_command

    async def can_manage(self, user_id: str) -> bool:
        return await can_manage(self._core, self._users, user_id)

    # -- the slash command ----------------------------------------------------------------------

    async def on_command(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()

        async def reply(text: str) -> None:
            await respond(text=text, response_type="ephemeral", replace_original=False)

        words = str(command.get("text") or "").split()
        sub = words[0].lower() if words else "help"
        args = words[1:]
        team = str(command.get("team_id") or "")
        channel = str(command.get("channel_id") or "")
        user = str(command.get("user_id") or "")
        try:
            await self._dispatch(
                sub, args, team=team, channel=channel, user=user, command=command, client=client, reply=reply
            )
        except Exception:
            log.exception("%s %s failed", self.command, sub)
            await reply("⚠️ Something went wrong on our side; please try again.")

    async def _dispatch(
        self,
        sub: str,
        args: list[str],
        *,
        team: str,
        channel: str,
        user: str,
        command: dict[str, Any],
        client: AsyncWebClient,
        reply: Reply,
    ) -> None:
        if _ARITY.get(sub) != len(args) or (sub in _FLAGS and args[0].lower() not in _SWITCH):
            await reply(usage(self.command))
        elif sub == "list":
            await reply(await self._list(team, channel))
        elif sub == "show":
            await reply(await self._show(team, channel))
        elif not await self.can_manage(user):
            await reply(NOT_ALLOWED.format(command=self.command))
        elif sub == "use":
            await reply(await self._use(team, channel, args[0].lower()))
        elif sub == "reset":
            await reply(await self._reset(team, channel))
        elif sub == "delete":
            await reply(await self._delete(args[0].lower()))
        elif sub == "default":
            await reply(await self._workspace_default(team, args[0].lower()))
        elif sub in _FLAGS:
            await reply(await self._flag(team, channel, sub, _SWITCH[args[0].lower()]))
        else:
            await self._open_modal(sub, args, channel, command, client, reply)

    async def _list(self, team: str, channel: str) -> str:
        current = await self._core.personas.resolve(ConversationKey(PLATFORM, team, channel, ""))
        lines = ["*Personas*"]
        for persona in await self._core.personas.list():
            marker = " ← this channel" if persona.name == current.persona.name else ""
            about = f" — {escape(persona.description)}" if persona.description else ""
            lines.append(f"• `{persona.name}` ({escape(persona.model)}){about}{marker}")
        return "\n".join(lines)

    async def _show(self, team: str, channel: str) -> str:
        resolved = await self._core.personas.resolve(ConversationKey(PLATFORM, team, channel, ""))
        p = resolved.persona
        settings = [f"model `{escape(p.model)}`"]
        for label, value in (
            ("temperature", p.temperature),
            ("top_p", p.top_p),
            ("max_tokens", p.max_tokens),
            ("context window", p.context_window),
            ("history limit", p.history_limit),
        ):
            if value is not None:
                settings.append(f"{label} {value}")
        if p.json_mode:
            settings.append("JSON replies")
        prompt = p.system_prompt
        if len(prompt) > _PROMPT_PREVIEW:
            prompt = prompt[:_PROMPT_PREVIEW] + "…"
        quoted = "\n".join("> " + escape(line) for line in prompt.splitlines())
        about = f"\n{escape(p.description)}" if p.description else ""
        flags = await self._core.channels.get(PLATFORM, team, channel)
        behaviour = (
            f"Follow-ups in threads: *{'on' if flags.follow_up_in_threads else 'off'}* · "
            f"other bots: *{'allowed' if flags.allow_bots else 'ignored'}*"
        )
        return (
            f"This channel uses *{p.name}* ({_SOURCES[resolved.source]}).{about}\n"
            f"{', '.join(settings)}\n{behaviour}\n*System prompt*\n{quoted}"
        )

    async def _use(self, team: str, channel: str, name: str) -> str:
        try:
            persona = await self._core.personas.set_channel(PLATFORM, team, channel, name)
        except UnknownPersona:
            return f"There is no persona named `{escape(name)}`. `{self.command} list` shows them all."
        assert persona is not None
        return (
            f"This channel now uses *{persona.name}* ({escape(persona.model)}). New replies use it at once."
        )

    async def _reset(self, team: str, channel: str) -> str:
        await self._core.personas.set_channel(PLATFORM, team, channel, None)
        resolved = await self._core.personas.resolve(ConversationKey(PLATFORM, team, channel, ""))
        return f"This channel is back to *{resolved.persona.name}* ({_SOURCES[resolved.source]})."

    async def _workspace_default(self, team: str, name: str) -> str:
        if name == "reset":
            await self._core.personas.set_workspace_default(PLATFORM, team, None)
            return (
                f"The workspace default is back to the built-in *{DEFAULT_PERSONA_NAME}*. "
                "Channels with a persona of their own keep it."
            )
        try:
            persona = await self._core.personas.set_workspace_default(PLATFORM, team, name)
        except UnknownPersona:
            return f"There is no persona named `{escape(name)}`. `{self.command} list` shows them all."
        assert persona is not None
        return (
            f"The workspace default is now *{persona.name}* ({escape(persona.model)}). "
            "Channels without a persona of their own use it from the next reply on."
        )

    async def _flag(self, team: str, channel: str, word: str, on: bool) -> str:
        setting, when_on, when_off = _FLAGS[word]
        await self._core.channels.update(PLATFORM, team, channel, **{setting: on})
        return when_on if on else when_off

    async def _delete(self, name: str) -> str:
        try:
            await self._core.personas.delete(name)
        except (UnknownPersona, DefaultPersonaRequired) as exc:
            return escape(str(exc))
        return f"Deleted *{name}*. Channels that used it are back to their workspace or default persona."

    async def _open_modal(
        self,
        sub: str,
        args: list[str],
        channel: str,
        command: dict[str, Any],
        client: AsyncWebClient,
        reply: Reply,
    ) -> None:
        persona: Persona | None = None
        if sub == "edit":
            persona = await self._core.personas.get(args[0].lower())
            if persona is None:
                await reply(
                    f"There is no persona named `{escape(args[0])}`. `{self.command} list` shows them all."
                )
                return
            too_long = [name for name, value in persona.to_fields().items() if len(value) > INPUT_MAX_LENGTH]
            if too_long:
                await reply(
                    f"`{persona.name}` has a {', '.join(too_long)} longer than Slack's form allows "
                    f"({INPUT_MAX_LENGTH:,} characters). "
                    "Edit it with `threadline personas export` / `import`."
                )
                return
        context = ModalContext(
            mode="edit" if sub == "edit" else "create",
            channel=channel,
            original=persona.name if persona else None,
        )
        try:
            await client.views_open(
                trigger_id=str(command.get("trigger_id")), view=persona_modal(context, persona)
            )
        except SlackApiError as exc:
            log.warning("views.open failed: %s", exc.response.get("error"))
            await reply("⚠️ Slack did not open the form (it allows 3 seconds); please run the command again.")

    # -- the modal ------------------------------------------------------------------------------

    async def on_view_submission(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        user = str((body.get("user") or {}).get("id") or "")
        context = ModalContext.load(str(view.get("private_metadata") or ""))
        if not await self.can_manage(user):
            await ack(response_action="errors", errors={"name": NOT_ALLOWED.format(command=self.command)})
            return
        base = await self._core.personas.get(context.original) if context.original else None
        try:
            persona, warnings = Persona.from_fields(submitted_fields(view), base=base)
            if context.mode == "edit" and context.original:
                await self._core.personas.update(context.original, persona)
            else:
                await self._core.personas.create(persona)
        except PersonaInvalid as exc:
            await ack(response_action="errors", errors=block_errors(exc.errors))
            return
        except (PersonaExists, UnknownPersona, DefaultPersonaRequired) as exc:
            await ack(response_action="errors", errors={"name": str(exc)})
            return
        await ack()
        verb = "Updated" if context.mode == "edit" else "Created"
        text = f"{verb} persona *{persona.name}*. Use it here with `{self.command} use {persona.name}`."
        if warnings:
            text += "\n" + "\n".join(f"⚠️ {escape(w)}" for w in warnings)
        if context.channel:
            try:
                await client.chat_postEphemeral(channel=context.channel, user=user, text=text)
            except SlackApiError as exc:
                log.info("could not confirm the persona change: %s", exc.response.get("error"))
