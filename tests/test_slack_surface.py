"""SlackSurface over the real slack_sdk client against the fake Slack: calls made, errors mapped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.surface import MAX_MESSAGE_BYTES, SlackSurface
from core.surface import MarkdownFlavor, MessageGone, MessageRejected, RateLimited, SurfaceError
from tests.fakes.openai_server import clear_proxy_env
from tests.fakes.slack_server import FakeSlack


@pytest_asyncio.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSlack]:
    clear_proxy_env(monkeypatch)
    async with FakeSlack() as slack:
        slack.echo_own_messages = False
        yield slack


def _surface(fake: FakeSlack, thread_ts: str | None = "1700000000.000100") -> SlackSurface:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    return SlackSurface(client, team=fake.team_id, channel="C0001", thread_ts=thread_ts, edit_interval=0.25)


def test_limits_describe_slack() -> None:
    surface = SlackSurface(AsyncWebClient(token="x"), team="T9", channel="C1", thread_ts=None)
    limits = surface.limits
    assert (limits.max_length, limits.length_unit) == (MAX_MESSAGE_BYTES, "utf8_bytes")
    assert limits.markdown is MarkdownFlavor.SLACK_MRKDWN
    assert limits.min_edit_interval == 1.0
    assert limits.shared_budget is not None and limits.shared_budget.key == "slack:T9:chat.update"
    assert limits.shared_budget.rate == pytest.approx(50 / 60)
    # Posts (the placeholder too) wait for the channel's chat.postMessage budget, then the workspace's.
    channel, workspace = limits.post_budgets
    assert (channel.key, channel.rate, channel.burst) == ("slack:T9:C1:chat.postMessage", 1.0, 4)
    assert workspace.key == "slack:T9:chat.postMessage" and workspace.rate == pytest.approx(300 / 60)
    assert limits.request_budget is None
    assert surface.render("**hi** <!here>") == "*hi* &lt;!here&gt;"


async def test_post_in_thread_then_edit(fake: FakeSlack) -> None:
    surface = _surface(fake)
    ts = await surface.post("_Thinking…_")
    await surface.edit(ts, "*done*")
    message = fake.messages[("C0001", ts)]
    assert message.thread_ts == "1700000000.000100"
    assert message.versions == ["_Thinking…_", "*done*"]
    post = fake.calls_to("chat.postMessage")[0]
    assert post.args["thread_ts"] == "1700000000.000100" and post.token == fake.bot_token


async def test_post_at_top_level_without_thread(fake: FakeSlack) -> None:
    ts = await _surface(fake, thread_ts=None).post("hi")
    assert fake.messages[("C0001", ts)].thread_ts is None
    assert "thread_ts" not in fake.calls_to("chat.postMessage")[0].args


async def test_429_is_rate_limited_with_retry_after(fake: FakeSlack) -> None:
    surface = _surface(fake)
    ts = await surface.post("a")
    fake.fail("chat.update", retry_after=7)
    with pytest.raises(RateLimited) as caught:
        await surface.edit(ts, "b")
    assert caught.value.retry_after == 7


@pytest.mark.parametrize(
    "error", ["message_not_found", "cant_update_message", "channel_not_found", "is_archived"]
)
async def test_gone_errors(fake: FakeSlack, error: str) -> None:
    surface = _surface(fake)
    ts = await surface.post("a")
    fake.fail("chat.update", error)
    with pytest.raises(MessageGone):
        await surface.edit(ts, "b")


async def test_deleted_message_is_gone(fake: FakeSlack) -> None:
    surface = _surface(fake)
    ts = await surface.post("a")
    fake.delete_message("C0001", ts)
    with pytest.raises(MessageGone):
        await surface.edit(ts, "b")


@pytest.mark.parametrize("error", ["msg_too_long", "invalid_blocks"])
async def test_rejected_errors(fake: FakeSlack, error: str) -> None:
    fake.fail("chat.postMessage", error)
    with pytest.raises(MessageRejected):
        await _surface(fake).post("a")


async def test_too_long_text_is_rejected_by_slack(fake: FakeSlack) -> None:
    with pytest.raises(MessageRejected):
        await _surface(fake).post("x" * 5000)


async def test_other_errors_are_plain_surface_errors(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", "internal_error", status=500)
    with pytest.raises(SurfaceError) as caught:
        await _surface(fake).post("a")
    assert type(caught.value) is SurfaceError


async def test_unreachable_slack_is_a_surface_error() -> None:
    client = AsyncWebClient(token="x", base_url="http://127.0.0.1:9/api/")
    surface = SlackSurface(client, team="T1", channel="C1", thread_ts=None)
    with pytest.raises(SurfaceError):
        await surface.post("a")
