"""A persona: the system prompt and sampling settings a channel or thread talks to."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


class PersonaInvalid(ValueError):
    """One or more fields are out of range; `errors` maps each field to a human message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    label: str
    hint: str
    multiline: bool = False
    required: bool = False


PERSONA_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("name", "Name", "lowercase letters, digits, - and _ (e.g. python-helper)", required=True),
    FieldSpec("description", "Description", "one line shown in persona lists"),
    FieldSpec("system_prompt", "System prompt", "who the assistant is and how it answers", True, True),
    FieldSpec("model", "Model", "model name on your endpoint, e.g. gpt-4o-mini", required=True),
    FieldSpec("temperature", "Temperature", "0 to 2; empty for the provider default"),
    FieldSpec("top_p", "Top p", "0 to 1; empty for the provider default"),
    FieldSpec("max_tokens", "Max tokens", "longest reply in tokens; empty for no limit"),
    FieldSpec("response_format", "Response format", "text or json_object"),
    FieldSpec("context_window", "Context window", "tokens the model accepts; empty for the model default"),
    FieldSpec("history_limit", "History limit", "most earlier messages sent; empty for no limit"),
)

_RANGES: dict[str, str] = {
    "temperature": "temperature must be a number between 0 and 2",
    "top_p": "top_p must be a number between 0 and 1",
    "max_tokens": "max_tokens must be a whole number between 1 and 1,000,000",
    "context_window": "context_window must be a whole number between 1,024 and 10,000,000",
    "history_limit": "history_limit must be a whole number between 1 and 100,000",
    "response_format": "response_format must be text or json_object",
    "name": "name must be 1–64 lowercase letters, digits, - or _, starting with a letter or digit",
    "model": "model must not be empty",
    "system_prompt": "system_prompt must not be empty",
    "description": "description must be at most 300 characters",
}


class Persona(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = Field(default="", max_length=300)
    system_prompt: str = Field(min_length=1)
    model: str = Field(min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    response_format: Literal["text", "json_object"] = "text"
    context_window: int | None = Field(default=None, ge=1024, le=10_000_000)
    history_limit: int | None = Field(default=None, ge=1, le=100_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(_RANGES["name"])
        return value

    @field_validator("system_prompt", "model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @property
    def json_mode(self) -> bool:
        return self.response_format == "json_object"

    def warnings(self) -> list[str]:
        temperature_changed = self.temperature is not None and self.temperature != DEFAULT_TEMPERATURE
        top_p_changed = self.top_p is not None and self.top_p != DEFAULT_TOP_P
        if temperature_changed and top_p_changed:
            return [
                "Both temperature and top_p are changed from their defaults; providers recommend "
                "adjusting only one of them."
            ]
        return []

    @classmethod
    def validate_data(cls, data: Mapping[str, Any]) -> Persona:
        """Build a persona, raising PersonaInvalid with one human message per bad field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            errors: dict[str, str] = {}
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else "persona"
                if error["type"] == "extra_forbidden":
                    errors[field] = f"{field} is not a persona field"
                elif error["type"] == "missing":
                    errors[field] = f"{field} is required"
                else:
                    errors.setdefault(field, _RANGES.get(field, f"{field}: {error['msg']}"))
            raise PersonaInvalid(errors) from None

    @classmethod
    def from_fields(
        cls, fields: Mapping[str, str | None], base: Persona | None = None
    ) -> tuple[Persona, list[str]]:
        """Build from form text (modals, CLI): empty optional fields mean "not set"."""
        data: dict[str, Any] = base.model_dump() if base else {}
        errors: dict[str, str] = {}
        for key, raw in fields.items():
            value = (raw or "").strip()
            if key in {"temperature", "top_p"}:
                data[key] = _parse_number(key, value, float, errors)
            elif key in {"max_tokens", "context_window", "history_limit"}:
                data[key] = _parse_number(key, value, int, errors)
            elif key == "response_format":
                data[key] = value.lower() or "text"
            else:
                data[key] = value
        if errors:
            raise PersonaInvalid(errors)
        persona = cls.validate_data(data)
        return persona, persona.warnings()

    def to_fields(self) -> dict[str, str]:
        return {
            spec.name: "" if getattr(self, spec.name) is None else str(getattr(self, spec.name))
            for spec in PERSONA_FIELDS
        }

    def to_data(self) -> dict[str, Any]:
        """The persona as plain data, without unset optional fields (for YAML export)."""
        return {key: value for key, value in self.model_dump().items() if value not in (None, "")}


def _parse_number(
    key: str, value: str, kind: type[int] | type[float], errors: dict[str, str]
) -> int | float | None:
    if not value:
        return None
    try:
        return kind(value.replace(",", "").replace("_", "") if kind is int else value)
    except ValueError:
        errors[key] = _RANGES[key]
        return None
