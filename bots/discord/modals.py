"""Persona forms. A persona has ten fields and a Discord modal holds five inputs, so the form has two
steps: the essentials (name, description, system prompt, model, temperature), saved on submit, then
"More settings…" for the rest. Every submit is validated with `Persona.from_fields`; errors come back
ephemerally with a "Fix it" button that reopens the form holding exactly what was typed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bots.discord.permissions import REFUSAL, may_manage
from bots.discord.replies import report_command_error, say
from core.personas.model import PERSONA_FIELDS, FieldSpec, Persona, PersonaInvalid
from core.personas.service import DefaultPersonaRequired, PersonaExists, UnknownPersona

if TYPE_CHECKING:
    from bots.discord.client import ThreadlineClient

log = logging.getLogger("threadline.discord.modals")

STEPS: dict[int, tuple[FieldSpec, ...]] = {1: PERSONA_FIELDS[:5], 2: PERSONA_FIELDS[5:]}
INPUT_MAX = 4000  # Discord's limit for a text input's value
SHORT_MAX = 300
TITLE_MAX = 45
LABEL_MAX = 45
HINT_MAX = 100
VIEW_TIMEOUT = 15 * 60.0


class PersonaForm(discord.ui.Modal):
    """One step of the persona form; `editing` is the persona's current name (None: a new one)."""

    def __init__(self, step: int, editing: str | None, values: dict[str, str]) -> None:
        what = "New persona" if editing is None else f"Edit {editing}"
        suffix = f" ({step}/2)"
        super().__init__(title=what[: TITLE_MAX - len(suffix)] + suffix, timeout=VIEW_TIMEOUT)
        self.step = step
        self.editing = editing
        self.kept: set[str] = set()  # fields too long to pre-fill: empty means "unchanged"
        self.inputs: dict[str, discord.ui.TextInput[Any]] = {}
        for spec in STEPS[step]:
            value = values.get(spec.name) or ""
            limit = INPUT_MAX if spec.multiline else SHORT_MAX
            label = spec.label
            if len(value) > limit:
                self.kept.add(spec.name)
                value, label = "", f"{spec.label} (empty keeps the current)"
            text_input: discord.ui.TextInput[Any] = discord.ui.TextInput(
                custom_id=spec.name,
                style=discord.TextStyle.paragraph if spec.multiline else discord.TextStyle.short,
                default=value or None,
                required=spec.required and spec.name not in self.kept,
                max_length=limit,
            )
            self.inputs[spec.name] = text_input
            self.add_item(
                discord.ui.Label(
                    text=label[:LABEL_MAX], description=spec.hint[:HINT_MAX], component=text_input
                )
            )

    def typed(self) -> dict[str, str]:
        return {name: text_input.value for name, text_input in self.inputs.items()}

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await save_form(interaction, self)

    async def on_error(  # type: ignore[override]  # discord.py's Modal narrows BaseView's signature
        self, interaction: discord.Interaction[Any], error: Exception, /
    ) -> None:
        wrapped = (
            error
            if isinstance(error, app_commands.AppCommandError)
            else app_commands.AppCommandError(str(error))
        )
        wrapped.__cause__ = error
        await report_command_error(interaction, wrapped)


async def save_form(interaction: discord.Interaction[ThreadlineClient], form: PersonaForm) -> None:
    if not may_manage(interaction):
        await say(interaction, REFUSAL)
        return
    typed = form.typed()
    fields = {name: value for name, value in typed.items() if not (name in form.kept and not value.strip())}
    personas = interaction.client.core.personas
    try:
        base = await personas.get(form.editing) if form.editing else None
        if form.editing and base is None:
            raise UnknownPersona(form.editing)
        persona, warnings = Persona.from_fields(fields, base=base)
        if form.editing is None:
            await personas.create(persona)
        else:
            await personas.update(form.editing, persona)
    except PersonaInvalid as exc:
        await _show_errors(interaction, form, typed, exc.errors)
        return
    except (PersonaExists, UnknownPersona, DefaultPersonaRequired) as exc:
        await _show_errors(interaction, form, typed, {"name": str(exc)})
        return
    verb = "Created" if form.editing is None else "Saved"
    lines = [f"✅ {verb} persona **{persona.name}** (model `{persona.model}`)."]
    lines += [f"⚠️ {warning}" for warning in warnings]
    if form.step == 1:
        lines.append(
            "Use `/persona use` to make a channel talk to it. More settings (top p, max tokens, "
            "response format, context window, history limit) are one click away:"
        )
        await say(interaction, "\n".join(lines), view=MoreSettings(persona.name))
    else:
        await say(interaction, "\n".join(lines))


async def _show_errors(
    interaction: discord.Interaction[Any], form: PersonaForm, typed: dict[str, str], errors: dict[str, str]
) -> None:
    labels = {spec.name: spec.label for spec in PERSONA_FIELDS}
    lines = ["❌ The persona was not saved:"]
    lines += [f"• **{labels.get(field, field)}**: {message}" for field, message in errors.items()]
    lines.append("Nothing you typed is lost: press **Fix it** to correct it.")
    await say(interaction, "\n".join(lines), view=FixIt(form.step, form.editing, typed))


class FixIt(discord.ui.View):
    """Reopens a rejected form with what the person typed."""

    def __init__(self, step: int, editing: str | None, typed: dict[str, str]) -> None:
        super().__init__(timeout=VIEW_TIMEOUT)
        self.step, self.editing, self.typed = step, editing, typed

    @discord.ui.button(label="Fix it", style=discord.ButtonStyle.primary)
    async def fix(self, interaction: discord.Interaction[Any], _button: discord.ui.Button[FixIt]) -> None:
        if not may_manage(interaction):
            await say(interaction, REFUSAL)
            return
        await interaction.response.send_modal(PersonaForm(self.step, self.editing, self.typed))


class MoreSettings(discord.ui.View):
    """Opens the second step for a saved persona."""

    def __init__(self, name: str) -> None:
        super().__init__(timeout=VIEW_TIMEOUT)
        self.name = name

    @discord.ui.button(label="More settings…", style=discord.ButtonStyle.secondary)
    async def more(
        self, interaction: discord.Interaction[Any], _button: discord.ui.Button[MoreSettings]
    ) -> None:
        if not may_manage(interaction):
            await say(interaction, REFUSAL)
            return
        persona = await interaction.client.core.personas.get(self.name)
        if persona is None:
            await say(interaction, f"There is no persona named '{self.name}' any more.")
            return
        await interaction.response.send_modal(PersonaForm(2, persona.name, persona.to_fields()))
