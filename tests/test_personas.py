"""Personas: validation messages, built-ins, YAML, and resolution order."""

from __future__ import annotations

import asyncio

import pytest

from core.config import async_database_url
from core.personas.builtin import DEFAULT_PERSONA_NAME
from core.personas.model import Persona, PersonaInvalid
from core.personas.service import (
    DefaultPersonaRequired,
    PersonaExists,
    PersonaService,
    PersonaSource,
    UnknownPersona,
)
from core.personas.yaml_io import PersonaFileError, dump_personas, load_personas
from core.storage.database import Database
from core.storage.migrate import upgrade
from core.types import ConversationKey

BASE = {"name": "helper", "system_prompt": "Be brief.", "model": "gpt-4o-mini"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", "2.5", "temperature must be a number between 0 and 2"),
        ("temperature", "warm", "temperature must be a number between 0 and 2"),
        ("top_p", "-0.1", "top_p must be a number between 0 and 1"),
        ("max_tokens", "0", "max_tokens must be a whole number between 1 and 1,000,000"),
        ("response_format", "xml", "response_format must be text or json_object"),
        ("name", "Bad Name!", "name must be 1–64 lowercase letters, digits, - or _"),
        ("history_limit", "1.5", "history_limit must be a whole number between 1 and 100,000"),
        ("context_window", "100", "context_window must be a whole number between 1,024"),
    ],
)
def test_out_of_range_values_are_refused_naming_field_and_range(field: str, value: str, message: str) -> None:
    with pytest.raises(PersonaInvalid) as caught:
        Persona.from_fields({**BASE, field: value})
    assert list(caught.value.errors) == [field]
    assert caught.value.errors[field].startswith(message)


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(PersonaInvalid) as caught:
        Persona.from_fields({"name": "x", "system_prompt": " ", "model": ""})
    assert set(caught.value.errors) == {"system_prompt", "model"}


def test_changing_both_temperature_and_top_p_warns() -> None:
    _, warnings = Persona.from_fields({**BASE, "temperature": "0.3", "top_p": "0.9"})
    assert len(warnings) == 1 and "only one" in warnings[0]
    _, warnings = Persona.from_fields({**BASE, "temperature": "0.3"})
    assert warnings == []


def test_form_fields_round_trip() -> None:
    persona, _ = Persona.from_fields(
        {**BASE, "temperature": "0.7", "max_tokens": "1,000", "history_limit": ""}
    )
    assert persona.temperature == 0.7 and persona.max_tokens == 1000 and persona.history_limit is None
    again, _ = Persona.from_fields(persona.to_fields())
    assert again == persona


def test_yaml_round_trip_and_errors() -> None:
    personas = [
        Persona.validate_data(BASE),
        Persona.validate_data({**BASE, "name": "json", "response_format": "json_object"}),
    ]
    assert load_personas(dump_personas(personas)) == personas
    with pytest.raises(PersonaFileError, match="persona bad: temperature must be a number between 0 and 2"):
        load_personas("personas:\n  - {name: bad, system_prompt: x, model: m, temperature: 3}\n")
    with pytest.raises(PersonaFileError, match="not valid YAML"):
        load_personas("personas: [")


@pytest.fixture
async def service(database_url: str):  # type: ignore[no-untyped-def]
    db = Database(async_database_url(database_url))
    await upgrade(db)
    personas = PersonaService(db, "test-model")
    await personas.seed_builtins()
    yield personas
    await db.aclose()


async def test_fresh_database_has_the_builtin_personas(service: PersonaService) -> None:
    personas = {p.name: p for p in await service.list()}
    assert set(personas) == {"assistant", "python", "legal-info", "support", "extractor"}
    assert personas["extractor"].response_format == "json_object"
    assert "lawyer" in personas["legal-info"].system_prompt
    assert all(p.model == "test-model" for p in personas.values())
    await service.seed_builtins()  # idempotent
    assert len(await service.list()) == 5


async def test_replicas_starting_together_seed_each_builtin_once(database_url: str) -> None:
    """Every replica seeds at start-up; when they race, none fails and no persona appears twice."""
    first = Database(async_database_url(database_url))
    await upgrade(first)
    others = [Database(async_database_url(database_url)) for _ in range(3)]
    try:
        services = [PersonaService(db, "test-model") for db in (first, *others)]
        await asyncio.gather(*(service.seed_builtins() for service in services for _ in range(2)))
        names = [persona.name for persona in await services[0].list()]
        assert sorted(names) == ["assistant", "extractor", "legal-info", "python", "support"]
    finally:
        for db in (first, *others):
            await db.aclose()


async def test_seeding_again_keeps_an_edited_builtin(service: PersonaService) -> None:
    edited = (await service.get("assistant")).model_copy(update={"system_prompt": "Answer in French."})  # type: ignore[union-attr]
    await service.update("assistant", edited)
    await service.seed_builtins()
    assert (await service.get("assistant")).system_prompt == "Answer in French."  # type: ignore[union-attr]


async def test_resolution_order_thread_channel_workspace_default(service: PersonaService) -> None:
    key = ConversationKey("slack", "T1", "C1", "100.1")
    resolved = await service.resolve(key)
    assert (resolved.persona.name, resolved.source) == (DEFAULT_PERSONA_NAME, PersonaSource.DEFAULT)

    await service.set_workspace_default("slack", "T1", "support")
    assert (await service.resolve(key)).source is PersonaSource.WORKSPACE
    await service.set_channel("slack", "T1", "C1", "python")
    resolved = await service.resolve(key)
    assert (resolved.persona.name, resolved.source) == ("python", PersonaSource.CHANNEL)
    await service.set_thread(key, "legal-info")
    resolved = await service.resolve(key)
    assert (resolved.persona.name, resolved.source) == ("legal-info", PersonaSource.THREAD)

    other_channel = ConversationKey("slack", "T1", "C2", "1.0")
    assert (await service.resolve(other_channel)).persona.name == "support"
    other_team = ConversationKey("slack", "T2", "C1", "100.1")
    assert (await service.resolve(other_team)).source is PersonaSource.DEFAULT

    await service.set_thread(key, None)
    await service.set_channel("slack", "T1", "C1", None)
    assert (await service.resolve(key)).persona.name == "support"


async def test_create_update_delete(service: PersonaService) -> None:
    persona = Persona.validate_data(BASE)
    await service.create(persona)
    with pytest.raises(PersonaExists):
        await service.create(persona)
    await service.set_channel("discord", "G", "C", "helper")
    updated = persona.model_copy(update={"system_prompt": "Be thorough."})
    await service.update("helper", updated)
    assert (await service.get("helper")) == updated
    with pytest.raises(UnknownPersona):
        await service.update("nobody", updated)
    with pytest.raises(UnknownPersona):
        await service.set_channel("discord", "G", "C", "nobody")
    await service.delete("helper")
    assert await service.get("helper") is None
    assert (await service.resolve(ConversationKey("discord", "G", "C", "t"))).source is PersonaSource.DEFAULT
    with pytest.raises(DefaultPersonaRequired):
        await service.delete(DEFAULT_PERSONA_NAME)
