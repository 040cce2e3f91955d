"""Property tests: any model output, cut into any deltas, is shown exactly, within limits, fences balanced."""

from __future__ import annotations

import asyncio
import html
import itertools
import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from core.streaming import EditBudgets, ReplyRenderer
from core.streaming.length import LengthUnit, measure
from core.streaming.splitting import ReplySplitter
from core.surface import MarkdownFlavor, SurfaceLimits
from tests.fakes.reply_checks import balanced, reassembles
from tests.fakes.surface import FakeSurface

INDICATOR = " ▍"


def test_the_checker_itself_rejects_wrong_parts() -> None:
    output = "intro\n```py\na = 1\nb = 2\n```\nend"
    good = ["intro\n```py\na = 1\n```", "```py\nb = 2\n```\nend"]
    assert reassembles(good, output)
    assert not reassembles(["intro\n```py\na = 1\n```", "b = 2\n```\nend"], output)  # fence not reopened
    assert not reassembles(["intro\n```py\na = 1\n", "```py\nb = 2\n```\nend"], output)  # not closed
    assert not reassembles(["intro\n```py\na = 1\n```", "```py\nb = 3\n```\nend"], output)
    assert not reassembles(good[:1], output)
    assert balanced(good[0]) and balanced(good[1]) and not balanced("```\nx")


# -- model outputs ------------------------------------------------------------------------------------

WORDS = st.sampled_from(
    ["hello", "world.", "Why?", "yes!", "naïve", "日本語のテキストです。", "👍", "👨‍👩‍👧", "e\u0301\u0302",
     "🇫🇷", "`tick`", "a~b", "x``y", "-", "**bold**", "&", "<tag>", "done…"]
)  # fmt: skip
# Runs without spaces. They never start a line with a backtick or tilde, and runs of those stay
# short: no split can keep fences whole in a line that is one huge run of backticks.
LONG_RUN = (
    st.text(alphabet=st.sampled_from("ab😀é漢\u0301~`"), min_size=30, max_size=250)
    .map(lambda text: re.sub(r"([`~]{6})[`~]+", r"\1", text))
    .map("z".__add__)
)
PARAGRAPH = st.lists(st.one_of(WORDS, WORDS, WORDS, LONG_RUN), min_size=1, max_size=40).map(" ".join)
CODE_LINE = st.one_of(PARAGRAPH, st.just(""), st.just("~~~"), st.just("```inner"), st.just("    indented"))


@st.composite
def code_blocks(draw: st.DrawFn) -> str:
    marker = draw(st.sampled_from(["```", "~~~", "````"]))
    info = draw(st.sampled_from(["", "python", " js ", "c++"]))
    lines = draw(st.lists(CODE_LINE, max_size=12))
    closed = draw(st.booleans()) or draw(st.booleans())
    return "\n".join([marker + info, *lines, *([marker] if closed else [])])


@st.composite
def outputs(draw: st.DrawFn, max_blocks: int = 8) -> str:
    blocks = draw(st.lists(st.one_of(PARAGRAPH, code_blocks()), min_size=1, max_size=max_blocks))
    text = ""
    for block in blocks:
        text += block + draw(st.sampled_from(["\n", "\n\n", "\n\n\n", " \n"]))
    return text if draw(st.booleans()) else text.rstrip("\n")


def chunked(text: str, sizes: list[int]) -> list[str]:
    chunks, start, index = [], 0, 0
    while start < len(text):
        size = sizes[index % len(sizes)]
        chunks.append(text[start : start + size])
        start, index = start + size, index + 1
    return chunks


CHUNK_SIZES = st.lists(st.integers(1, 60), min_size=1, max_size=20)
UNITS = st.sampled_from(["chars", "utf8_bytes", "utf16_units"])


def slack_escape(markdown: str) -> str:
    """A render that changes lengths, like Slack's escaping of &, < and >."""
    return markdown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- the splitter alone (many examples, no event loop) --------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    output=outputs(),
    sizes=CHUNK_SIZES,
    max_length=st.integers(40, 400),
    unit=UNITS,
    escape=st.booleans(),
    look_every=st.integers(1, 5),
)
def test_splitter_parts_reassemble_fit_and_never_change(
    output: str, sizes: list[int], max_length: int, unit: LengthUnit, escape: bool, look_every: int
) -> None:
    render = slack_escape if escape else (lambda markdown: markdown)
    splitter = ReplySplitter(render, max_length, unit, indicator=INDICATOR)
    seen_final: list[str] = []
    for number, chunk in enumerate(chunked(output, sizes)):
        splitter.append(chunk)
        if number % look_every == 0:
            shown = splitter.streaming_text()
            assert shown is None or measure(shown, unit) <= max_length
            finalised = [part.text for part in splitter.finalised]
            assert finalised[: len(seen_final)] == seen_final  # a finalised part never changes
            seen_final = finalised
    parts = [part.text for part in splitter.finish()]
    assert parts[: len(seen_final)] == seen_final
    for text in parts:
        assert measure(text, unit) <= max_length
        assert balanced(text)
    readable = [html.unescape(text) for text in parts] if escape else parts
    if output.strip():
        assert reassembles(readable, output)
    else:
        assert parts == []


# -- through the renderer, against the fake surface ---------------------------------------------------


async def _stream(surface: FakeSurface, chunks: list[str], pauses: list[bool]) -> float:
    renderer = ReplyRenderer(surface, EditBudgets())
    started = time.monotonic()
    await renderer.start()
    for chunk, pause in zip(chunks, pauses * len(chunks), strict=False):
        renderer.push(chunk)
        await asyncio.sleep(0.002 if pause else 0)
    result = await renderer.finish()
    assert result.delivered
    assert result.message_ids == surface.posted
    assert result.parts == surface.final_texts()
    return time.monotonic() - started


@settings(max_examples=30, deadline=None)
@given(
    output=outputs(max_blocks=4).filter(lambda text: bool(text.strip())),
    sizes=st.lists(st.integers(4, 60), min_size=1, max_size=20),
    pauses=st.lists(st.booleans(), min_size=1, max_size=7),
    max_length=st.integers(60, 500),
    unit=UNITS,
)
def test_renderer_shows_exact_output_within_limits(
    output: str, sizes: list[int], pauses: list[bool], max_length: int, unit: LengthUnit
) -> None:
    interval = 0.005
    limits = SurfaceLimits(
        max_length=max_length,
        length_unit=unit,
        min_edit_interval=interval,
        markdown=MarkdownFlavor.COMMONMARK,
        streaming_indicator=INDICATOR,
    )
    surface = FakeSurface(limits)
    asyncio.run(_stream(surface, chunked(output, sizes), pauses))

    finals = surface.final_texts()
    assert reassembles(finals, output)
    for text in finals:
        assert balanced(text)
        assert not text.endswith(INDICATOR)
    for call in surface.calls:
        assert measure(call.text, unit) <= max_length
    for message_id in surface.posted:
        edits = surface.edits(message_id)
        if edits:
            posted_at = next(c.started for c in surface.calls if c.message_id == message_id)
            elapsed = edits[-1].started - posted_at
            assert len(edits) <= elapsed / interval + 2
        shown = surface.history[message_id]
        assert all(a != b for a, b in itertools.pairwise(shown))  # no identical edit
