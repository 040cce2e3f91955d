"""ReplyRenderer against the fake surface: placeholder, throttled edits, splitting, endings."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import pytest

from core.streaming import EMPTY_REPLY, EditBudgets, ReplyRenderer
from core.streaming.length import measure
from core.surface import MarkdownFlavor, SurfaceError, SurfaceLimits
from tests.fakes.reply_checks import balanced, reassembles
from tests.fakes.surface import FAST_LIMITS, FakeSurface

INDICATOR = FAST_LIMITS.streaming_indicator
WORDS = [f"word{i} " for i in range(120)]


async def stream(renderer: ReplyRenderer, deltas: list[str], gap: float = 0.0) -> None:
    await renderer.start()
    for delta in deltas:
        renderer.push(delta)
        await asyncio.sleep(gap)


def limits(**changes: object) -> SurfaceLimits:
    return dataclasses.replace(FAST_LIMITS, **changes)  # type: ignore[arg-type]


async def test_placeholder_is_posted_at_start_before_any_delta() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await renderer.start()
    assert [(c.kind, c.text) for c in surface.calls] == [("post", FAST_LIMITS.placeholder)]
    assert renderer.message_ids == ["m0"]
    renderer.push("Hi")
    result = await renderer.finish()
    assert result.message_ids == ["m0"] and result.parts == ["Hi"] and result.delivered
    assert surface.history["m0"][0] == FAST_LIMITS.placeholder


async def test_final_text_is_exact_and_indicator_shows_only_while_streaming() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, WORDS, gap=0.002)
    await renderer.finish()
    shown = surface.history["m0"]
    assert shown[-1] == "".join(WORDS)
    intermediate = shown[1:-1]
    assert intermediate, "progress was shown before the end"
    assert all(text.endswith(INDICATOR) for text in intermediate)
    assert all("".join(WORDS).startswith(text.removesuffix(INDICATOR)) for text in intermediate)
    assert all(a != b for a, b in itertools.pairwise(shown))


async def test_edits_are_throttled_and_deltas_coalesced() -> None:
    interval = 0.04
    surface = FakeSurface(limits(min_edit_interval=interval))
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, WORDS, gap=0.003)  # ~0.4 s of deltas
    await renderer.finish()
    edits = surface.edits("m0")
    gaps = [b.started - a.started for a, b in itertools.pairwise(edits[:-1])]  # the final one may be sooner
    assert min(gaps) >= interval - 0.002
    assert 4 <= len(edits) < len(WORDS) / 4


async def test_the_first_text_replaces_the_placeholder_at_once() -> None:
    surface = FakeSurface(limits(min_edit_interval=0.3))  # posting the placeholder is not an edit
    renderer = ReplyRenderer(surface, EditBudgets())
    await renderer.start()
    renderer.push("Hello")
    await asyncio.sleep(0.02)
    assert surface.history["m0"] == [FAST_LIMITS.placeholder, "Hello" + INDICATOR]
    renderer.push(" there")
    result = await renderer.finish()
    first, final = surface.edits("m0")
    # The finished text goes out at once: only intermediate edits keep the interval.
    assert final.started - first.started < 0.1
    assert result.parts == ["Hello there"]


async def test_edit_interval_argument_overrides_the_surface_default() -> None:
    surface = FakeSurface(limits(min_edit_interval=10.0))
    renderer = ReplyRenderer(surface, EditBudgets(), edit_interval=0.01)
    await stream(renderer, WORDS[:40], gap=0.003)
    await renderer.finish()
    assert len(surface.edits("m0")) >= 3


async def test_without_interval_every_push_is_shown_and_edits_only_append() -> None:
    terminal = SurfaceLimits(
        max_length=1_000_000,
        length_unit="chars",
        min_edit_interval=0.0,
        markdown=MarkdownFlavor.PLAIN,
        streaming_indicator="",
        placeholder="",
    )
    surface = FakeSurface(terminal)
    renderer = ReplyRenderer(surface, EditBudgets())
    deltas = ["Look:\n", "```py\n", "x = 1\n", "y", " = 2", "\n```\n", "done"]
    await stream(renderer, deltas, gap=0.001)
    await renderer.finish()
    shown = surface.history["m0"]
    assert shown == ["".join(deltas[: i + 1]) for i in range(len(deltas))]
    assert surface.calls[0].kind == "post" and surface.calls[0].text == "Look:\n"  # no empty placeholder


async def test_open_code_block_is_closed_while_streaming_and_on_the_final_text() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, ["Code:\n", "```python\n", "print(1)\n"], gap=0.03)
    assert surface.history["m0"][-1] == "Code:\n```python\nprint(1)\n```" + INDICATOR
    renderer.push("print(2)")  # the model stops inside the block (token limit)
    await renderer.finish("Cut.")
    assert surface.history["m0"][-1] == "Code:\n```python\nprint(1)\nprint(2)\n```\n\nCut."


async def test_long_reply_continues_in_new_messages_with_fences_reopened() -> None:
    surface = FakeSurface(limits(max_length=200))
    renderer = ReplyRenderer(surface, EditBudgets())
    prose = "A sentence that is here. " * 6
    code = "".join(f"line_{i} = {i}\n" for i in range(30))
    output = prose + "\n\n```python\n" + code + "```\nThe end."
    await stream(renderer, [output[i : i + 9] for i in range(0, len(output), 9)], gap=0.001)
    result = await renderer.finish()
    assert result.delivered and result.message_ids == surface.posted and len(surface.posted) >= 3
    texts = surface.final_texts()
    assert all(len(call.text) <= 200 for call in surface.calls)
    assert texts[0] == prose + "\n\n"  # split at the paragraph, not inside the block
    for later in texts[1:]:
        assert later.startswith("```python\n") and balanced(later)
    assert texts[-1].endswith("```\nThe end.")
    assert reassembles(texts, output)


async def test_finalised_parts_are_not_edited_again() -> None:
    surface = FakeSurface(limits(max_length=120))
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, WORDS, gap=0.002)
    await renderer.finish()
    for message_id in surface.posted[:-1]:
        shown = surface.history[message_id]
        final = shown[-1]
        assert shown.count(final) == 1 and not final.endswith(INDICATOR)
        last_edit = surface.edits(message_id)[-1]
        next_post = next(c for c in surface.calls if c.kind == "post" and c.started >= last_edit.started)
        assert next_post.message_id == surface.posted[surface.posted.index(message_id) + 1]
    assert "".join(surface.final_texts()) == "".join(WORDS)


async def test_length_counts_utf8_bytes_of_the_rendered_text() -> None:
    def render(markdown: str) -> str:  # Slack escapes &, < and >: the rendered text is longer
        return markdown.replace("&", "&amp;").replace("<", "&lt;")

    surface = FakeSurface(limits(max_length=300, length_unit="utf8_bytes"), render=render)
    renderer = ReplyRenderer(surface, EditBudgets())
    deltas = ["日本語 & <emoji> 👨‍👩‍👧 " for _ in range(40)]
    await stream(renderer, deltas, gap=0.001)
    result = await renderer.finish()
    assert all(measure(call.text, "utf8_bytes") <= 300 for call in surface.calls)
    assert len(result.message_ids) > 1
    assert "".join(result.parts) == render("".join(deltas))


async def test_notice_is_a_separate_last_paragraph_or_a_message_of_its_own() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, ["All ", "good."])
    result = await renderer.finish("⚠️ Reply cut at the token limit.")
    assert result.parts == ["All good.\n\n⚠️ Reply cut at the token limit."]

    full = "x" * 95
    surface = FakeSurface(limits(max_length=100))
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, [full])
    result = await renderer.finish("⚠️ Reply cut at the token limit.")
    assert result.parts == [full, "⚠️ Reply cut at the token limit."]
    assert result.message_ids == ["m0", "m1"]


async def test_failure_before_any_token_replaces_the_placeholder() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await renderer.start()
    result = await renderer.fail("⚠️ The model is unavailable.")
    assert surface.history["m0"] == [FAST_LIMITS.placeholder, "⚠️ The model is unavailable."]
    assert result.message_ids == ["m0"] and result.delivered


async def test_failure_after_some_text_keeps_it_and_adds_the_message() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, ["Half an ", "answer"])
    result = await renderer.fail("⚠️ The connection dropped.")
    assert result.parts == ["Half an answer\n\n⚠️ The connection dropped."]


async def test_empty_reply_never_leaves_the_placeholder() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, ["\n", "  "])
    result = await renderer.finish()
    assert result.parts == [EMPTY_REPLY]
    assert surface.history["m0"] == [FAST_LIMITS.placeholder, EMPTY_REPLY]  # blank text never shown


async def test_placeholder_post_failure_posts_the_text_instead() -> None:
    surface = FakeSurface()
    surface.post_errors[0] = SurfaceError("boom")
    renderer = ReplyRenderer(surface, EditBudgets())
    await stream(renderer, WORDS[:20], gap=0.002)
    result = await renderer.finish()
    assert result.delivered and result.parts == ["".join(WORDS[:20])]
    assert result.message_ids == surface.posted == ["m1"]


async def test_finish_is_idempotent_and_push_after_finish_is_an_error() -> None:
    renderer = ReplyRenderer(FakeSurface(), EditBudgets())
    await stream(renderer, ["done"])
    first = await renderer.finish()
    assert await renderer.finish() is first
    with pytest.raises(RuntimeError):
        renderer.push("more")


async def test_finish_without_start_posts_the_reply() -> None:
    surface = FakeSurface()
    renderer = ReplyRenderer(surface, EditBudgets())
    renderer.push("just this")
    result = await renderer.finish()
    assert [(c.kind, c.text) for c in surface.calls] == [("post", "just this")]
    assert result.message_ids == ["m0"]


async def test_push_is_cheap_and_never_waits() -> None:
    surface = FakeSurface(latency=0.05)
    renderer = ReplyRenderer(surface, EditBudgets())
    await renderer.start()
    began = time.perf_counter()
    for delta in WORDS:
        renderer.push(delta)
    assert time.perf_counter() - began < 0.01
    result = await renderer.finish()
    assert result.parts == ["".join(WORDS)]


async def test_beyond_the_streams_a_budget_serves_replies_arrive_whole_and_exact() -> None:
    from core.surface import EditBudget

    budget = EditBudget(key="workspace:edits", rate=50 / 60, burst=5)
    budgets = EditBudgets()
    surfaces = [FakeSurface(limits(shared_budget=budget, streams_at_once=2)) for _ in range(3)]
    renderers = [ReplyRenderer(surface, budgets) for surface in surfaces]
    for renderer in renderers:
        await renderer.start()
    assert [r.streaming for r in renderers] == [True, True, False]
    # The third shows nothing while it grows: no placeholder, no edits.
    renderers[2].push("Whole ")
    await asyncio.sleep(0.05)
    assert surfaces[2].calls == []
    renderers[2].push("answer.")
    result = await renderers[2].finish()
    assert surfaces[2].final_texts() == ["Whole answer."] and result.parts == ["Whole answer."]
    assert [call.kind for call in surfaces[2].calls] == ["post"]
    # A finished stream frees its place for the next reply.
    renderers[0].push("First.")
    await renderers[0].finish()
    later = ReplyRenderer(FakeSurface(limits(shared_budget=budget, streams_at_once=2)), budgets)
    await later.start()
    assert later.streaming
    await asyncio.gather(renderers[1].finish(), later.finish())
