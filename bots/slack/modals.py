"""The persona create/edit modal: one input per persona field, validation errors shown in place."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.personas.model import PERSONA_FIELDS, Persona

CALLBACK_ID = "threadline_persona"
ACTION_ID = "value"
INPUT_MAX_LENGTH = 3000  # Slack's limit for plain_text_input
_TEXT_LIMIT = 150  # label/placeholder plain_text limit we keep to (Slack: label 2000, hint 2000)

Mode = Literal["create", "edit"]


@dataclass(frozen=True, slots=True)
class ModalContext:
    """What the modal remembers between opening and submission (its private_metadata)."""

    mode: Mode
    channel: str  # where /persona was run: confirmations go there as ephemeral messages
    original: str | None = None  # the persona being edited

    def dump(self) -> str:
        return json.dumps({"mode": self.mode, "channel": self.channel, "original": self.original})

    @classmethod
    def load(cls, raw: str) -> ModalContext:
        data = json.loads(raw or "{}")
        mode: Mode = "edit" if data.get("mode") == "edit" else "create"
        original = data.get("original")
        return cls(
            mode=mode, channel=str(data.get("channel") or ""), original=str(original) if original else None
        )


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:_TEXT_LIMIT], "emoji": True}


def persona_modal(context: ModalContext, persona: Persona | None = None) -> dict[str, Any]:
    """A modal with every persona field (PERSONA_FIELDS order), pre-filled from `persona`."""
    values = persona.to_fields() if persona is not None else {}
    blocks: list[dict[str, Any]] = []
    for spec in PERSONA_FIELDS:
        element: dict[str, Any] = {
            "type": "plain_text_input",
            "action_id": ACTION_ID,
            "multiline": spec.multiline,
            "max_length": INPUT_MAX_LENGTH,
        }
        initial = values.get(spec.name, "")
        if initial:  # Slack refuses an empty initial_value
            element["initial_value"] = initial[:INPUT_MAX_LENGTH]
        blocks.append(
            {
                "type": "input",
                "block_id": spec.name,
                "optional": not spec.required,
                "label": _plain(spec.label),
                "hint": _plain(spec.hint),
                "element": element,
            }
        )
    title = "Edit persona" if context.mode == "edit" else "New persona"
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": context.dump(),
        "title": _plain(title),
        "submit": _plain("Save"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


def submitted_fields(view: Mapping[str, Any]) -> dict[str, str]:
    """The text of every persona input in a view_submission (empty string when left blank)."""
    state = (view.get("state") or {}).get("values") or {}
    fields: dict[str, str] = {}
    for spec in PERSONA_FIELDS:
        block = state.get(spec.name) or {}
        value = (block.get(ACTION_ID) or {}).get("value")
        fields[spec.name] = str(value) if value is not None else ""
    return fields


def block_errors(errors: Mapping[str, str]) -> dict[str, str]:
    """Field errors → `response_action: errors` keyed by block id (unknown fields land on `name`)."""
    known = {spec.name for spec in PERSONA_FIELDS}
    shown: dict[str, str] = {}
    for field, message in errors.items():
        block = field if field in known else "name"
        shown[block] = f"{shown[block]} {message}" if block in shown else message
    return {block: message[:2000] for block, message in shown.items()}
