"""Personas as YAML: `threadline personas export` / `import FILE`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from core.personas.model import Persona, PersonaInvalid


class PersonaFileError(ValueError):
    pass


def dump_personas(personas: Iterable[Persona]) -> str:
    data = {"personas": [persona.to_data() for persona in personas]}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def load_personas(text: str) -> list[Persona]:
    """Parse a YAML document: `personas: [...]`, a list, or one mapping."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PersonaFileError(f"not valid YAML: {exc}") from None
    if isinstance(data, dict) and "personas" in data:
        data = data["personas"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise PersonaFileError("expected a list of personas under 'personas:'")
    personas: list[Persona] = []
    for index, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise PersonaFileError(f"persona #{index} is not a mapping")
        try:
            personas.append(Persona.validate_data(item))
        except PersonaInvalid as exc:
            label = item.get("name", f"#{index}")
            raise PersonaFileError(f"persona {label}: {exc}") from None
    return personas
