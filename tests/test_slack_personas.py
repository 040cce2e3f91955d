"""`/persona` and the persona modal, end to end over HTTP, and personas in replies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bots.slack.modals import CALLBACK_ID
from core.personas.model import PERSONA_FIELDS, Persona
from core.personas.service import PersonaSource
from core.types import ConversationKey
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.slack_harness import SlackHarness

BOT = "<@UBOT>"
ADMIN, OWNER, MEMBER, LISTED = "U0ADMIN", "U0OWNER", "U0001", "U0LISTED"


@pytest_asyncio.fixture
async def slack(tmp_path: Path, llm: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    fake = FakeSlack()
    fake.add_user(ADMIN, "ada", is_admin=True)
    fake.add_user(OWNER, "olga", is_owner=True)
    fake.add_user(LISTED, "lee")
    async with SlackHarness.running(tmp_path, llm=llm, fake=fake, admins=[LISTED]) as harness:
        yield harness


async def _command(slack: SlackHarness, text: str, *, user: str = MEMBER, channel: str = "C0001") -> str:
    """Run the slash command; return the ephemeral answer the person sees."""
    fake = slack.fake
    before = len(fake.ephemeral)
    delivery = await fake.run_command(text, user=user, channel=channel)
    assert delivery.status == 200
    await fake.wait_until(lambda: len(fake.ephemeral) > before)
    return str(fake.ephemeral[-1].get("text", ""))


async def _channel_persona(slack: SlackHarness, channel: str = "C0001") -> tuple[str, PersonaSource]:
    assert slack.core is not None
    resolved = await slack.core.personas.resolve(ConversationKey("slack", slack.fake.team_id, channel, ""))
    return resolved.persona.name, resolved.source


async def _open_modal(slack: SlackHarness, text: str, user: str = ADMIN) -> tuple[str, dict[str, Any]]:
    fake = slack.fake
    opened = len(fake.views)
    delivery = await fake.run_command(text, user=user)
    assert delivery.status == 200
    await fake.wait_until(lambda: len(fake.views) > opened)
    view_id, view = list(fake.views.items())[-1]
    return view_id, view


async def test_use_by_a_member_is_refused(slack: SlackHarness) -> None:
    answer = await _command(slack, "use python", user=MEMBER)
    assert "Only workspace admins and owners" in answer
    assert await _channel_persona(slack) == ("assistant", PersonaSource.DEFAULT)
    assert slack.fake.ephemeral[-1]["response_type"] == "ephemeral"


@pytest.mark.parametrize("user", [ADMIN, OWNER, LISTED])
async def test_admins_owners_and_listed_admins_may_change_the_channel(slack: SlackHarness, user: str) -> None:
    answer = await _command(slack, "use python", user=user)
    assert "now uses *python*" in answer
    assert await _channel_persona(slack) == ("python", PersonaSource.CHANNEL)
    answer = await _command(slack, "reset", user=user)
    assert "back to *assistant*" in answer
    assert await _channel_persona(slack) == ("assistant", PersonaSource.DEFAULT)


async def test_the_next_reply_uses_the_new_persona(slack: SlackHarness, llm: FakeOpenAI) -> None:
    view_id, _ = await _open_modal(slack, "create")
    delivery = await slack.fake.submit_view(
        view_id,
        {
            "name": "pirate",
            "system_prompt": "Talk like a pirate.",
            "model": "gpt-pirate",
            "temperature": "0.9",
        },
        user=ADMIN,
    )
    assert delivery.status == 200 and not delivery.body  # modal closed
    assert "Created persona *pirate*" in slack.fake.ephemeral[-1]["text"]
    assert "now uses *pirate*" in await _command(slack, "use pirate", user=ADMIN)
    await slack.say(f"{BOT} ahoy")
    request = llm.requests[-1]
    assert request["model"] == "gpt-pirate"
    assert request["temperature"] == 0.9
    assert request["messages"][0] == {"role": "system", "content": "Talk like a pirate."}


async def test_show_and_list(slack: SlackHarness) -> None:
    shown = await _command(slack, "show")
    assert "*assistant* (the built-in default)" in shown and "*System prompt*" in shown
    await _command(slack, "use python", user=ADMIN)
    shown = await _command(slack, "show")
    assert "*python* (set for this channel)" in shown and "temperature 0.2" in shown
    listed = await _command(slack, "list")
    assert "`python`" in listed and "← this channel" in listed and "`assistant`" in listed


@pytest.mark.parametrize("text", ["", "help", "frobnicate", "use", "use a b", "edit", "reset now"])
async def test_unknown_or_bad_subcommands_get_usage_help(slack: SlackHarness, text: str) -> None:
    answer = await _command(slack, text, user=ADMIN)
    assert "`/persona use NAME`" in answer


async def test_use_of_an_unknown_persona(slack: SlackHarness) -> None:
    answer = await _command(slack, "use nobody", user=ADMIN)
    assert "There is no persona named `nobody`" in answer
    assert await _channel_persona(slack) == ("assistant", PersonaSource.DEFAULT)


async def test_create_is_refused_to_members_without_a_modal(slack: SlackHarness) -> None:
    answer = await _command(slack, "edit python", user=MEMBER)
    assert "Only workspace admins" in answer
    assert slack.fake.views == {}


async def test_the_modal_has_every_persona_field(slack: SlackHarness) -> None:
    _, view = await _open_modal(slack, "create")
    assert view["callback_id"] == CALLBACK_ID
    blocks = [b for b in view["blocks"] if b["type"] == "input"]
    assert [b["block_id"] for b in blocks] == [spec.name for spec in PERSONA_FIELDS]
    required = {b["block_id"] for b in blocks if not b["optional"]}
    assert required == {spec.name for spec in PERSONA_FIELDS if spec.required}
    assert slack.fake.rejected_views == []


async def test_modal_validation_errors_are_shown_in_the_modal(slack: SlackHarness) -> None:
    view_id, _ = await _open_modal(slack, "create")
    delivery = await slack.fake.submit_view(
        view_id,
        {"name": "Bad Name!", "system_prompt": "x", "model": "m", "temperature": "5", "max_tokens": "lots"},
        user=ADMIN,
    )
    assert delivery.status == 200
    assert delivery.body["response_action"] == "errors"
    errors = delivery.body["errors"]
    # Unparseable numbers are reported first (the form's text cannot become a persona yet).
    assert set(errors) == {"max_tokens"} and "whole number" in errors["max_tokens"]
    assert slack.core is not None and await slack.core.personas.get("bad name!") is None
    # Fix the numbers: now the name's problem shows.
    delivery = await slack.fake.submit_view(
        view_id, {"name": "Bad Name!", "system_prompt": "x", "model": "m", "temperature": "5"}, user=ADMIN
    )
    assert set(delivery.body["errors"]) == {"name", "temperature"}
    assert "between 0 and 2" in delivery.body["errors"]["temperature"]


async def test_creating_a_persona_that_exists_is_an_error_on_the_name(slack: SlackHarness) -> None:
    view_id, _ = await _open_modal(slack, "create")
    delivery = await slack.fake.submit_view(
        view_id, {"name": "python", "system_prompt": "x", "model": "m"}, user=ADMIN
    )
    assert delivery.body["response_action"] == "errors"
    assert "already exists" in delivery.body["errors"]["name"]


async def test_edit_is_prefilled_and_saves(slack: SlackHarness) -> None:
    view_id, view = await _open_modal(slack, "edit python")
    initial = {b["block_id"]: b["element"].get("initial_value") for b in view["blocks"]}
    assert initial["name"] == "python" and initial["temperature"] == "0.2"
    delivery = await slack.fake.submit_view(view_id, {"temperature": "0.7", "max_tokens": "500"}, user=ADMIN)
    assert delivery.status == 200 and not delivery.body
    assert slack.core is not None
    edited = await slack.core.personas.get("python")
    assert edited is not None and edited.temperature == 0.7 and edited.max_tokens == 500
    assert edited.system_prompt.startswith("You are an expert Python engineer")
    assert "Updated persona *python*" in slack.fake.ephemeral[-1]["text"]


async def test_a_persona_too_long_for_the_form_is_not_opened_truncated(slack: SlackHarness) -> None:
    assert slack.core is not None
    await slack.core.personas.create(Persona(name="essay", system_prompt="word " * 700, model="m"))
    answer = await _command(slack, "edit essay", user=ADMIN)
    assert "system_prompt longer than Slack's form allows" in answer
    assert slack.fake.views == {}


async def test_a_submission_from_a_member_is_refused(slack: SlackHarness) -> None:
    view_id, _ = await _open_modal(slack, "create")
    delivery = await slack.fake.submit_view(view_id, {"name": "sneaky", "system_prompt": "x", "model": "m"})
    assert (
        delivery.body["response_action"] == "errors"
        and "Only workspace admins" in delivery.body["errors"]["name"]
    )
    assert slack.core is not None and await slack.core.personas.get("sneaky") is None


async def test_two_channels_with_different_personas_never_share_history(
    slack: SlackHarness, llm: FakeOpenAI
) -> None:
    await _command(slack, "use python", user=ADMIN, channel="C0001")
    await _command(slack, "use support", user=ADMIN, channel="C0002")
    one = await slack.say(f"{BOT} secret one is swordfish", channel="C0001")
    two = await slack.say(f"{BOT} what is the secret?", channel="C0002")
    await slack.say("and again?", channel="C0002", thread_ts=two.ts)
    await slack.say("more in one", channel="C0001", thread_ts=one.ts)
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for request in llm.requests:
        system = request["messages"][0]["content"]
        channel = "C0001" if system.startswith("You are an expert Python") else "C0002"
        assert channel == "C0001" or system.startswith("You are a friendly, patient customer-service")
        by_channel.setdefault(channel, []).append(request)
    assert len(by_channel["C0001"]) == 2 and len(by_channel["C0002"]) == 2
    for request in by_channel["C0002"]:
        assert "swordfish" not in str(request["messages"])
    assert "swordfish" in str(by_channel["C0001"][-1]["messages"])


async def test_commands_and_modal_errors_over_socket_mode(tmp_path: Path, llm: FakeOpenAI) -> None:
    fake = FakeSlack()
    fake.add_user(ADMIN, "ada", is_admin=True)
    async with SlackHarness.running(tmp_path, llm=llm, fake=fake, mode="socket") as slack:
        assert "Only workspace admins" in await _command(slack, "use python", user=MEMBER)
        assert "now uses *python*" in await _command(slack, "use python", user=ADMIN)
        assert await _channel_persona(slack) == ("python", PersonaSource.CHANNEL)
        view_id, _ = await _open_modal(slack, "create")
        delivery = await fake.submit_view(
            view_id, {"name": "ok", "system_prompt": "x", "model": "m", "top_p": "2"}, user=ADMIN
        )
        assert delivery.status == 200  # the envelope was acked, with the errors as its payload
        assert delivery.body["response_action"] == "errors"
        assert "between 0 and 1" in delivery.body["errors"]["top_p"]
