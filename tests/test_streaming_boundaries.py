"""Where a message ends when a reply outgrows it, and how fences are followed as text arrives."""

from __future__ import annotations

import pytest

from core.streaming.boundaries import choose_cut, is_safe_cut
from core.streaming.fences import Fence, FenceTracker
from core.streaming.splitting import ReplySplitter


@pytest.mark.parametrize(
    ("body", "room", "expected"),
    [
        ("First paragraph here.\n\nSecond one, a line\nand more words", 45, "First paragraph here.\n\n"),
        ("One line of text here\nanother line. With a sentence", 45, "One line of text here\n"),
        ("A sentence ends here. Then another one goes on and on", 40, "A sentence ends here. "),
        ("words without any full stop go on and on and on", 30, "words without any full stop "),
        ("x" * 50, 20, "x" * 20),
    ],
)
def test_natural_boundaries_in_order_of_preference(body: str, room: int, expected: str) -> None:
    assert body[: choose_cut(body, room, complete=True) or 0] == expected


def test_a_boundary_too_early_is_not_worth_a_half_empty_message() -> None:
    body = "Hi.\n\n" + "word " * 20
    assert choose_cut(body, 60, complete=True) == 60  # after the last space that fits, not after "Hi."


def test_a_hard_cut_never_splits_a_character_from_its_marks() -> None:
    body = "e\u0301" * 30
    cut = choose_cut(body, 21, complete=True)
    assert cut == 20 and body[cut] == "e"
    family = "👨‍👩‍👧" * 5  # man ZWJ woman ZWJ girl
    cut = choose_cut(family, 7, complete=True)
    assert cut == 5 and family[:cut] == "👨‍👩‍👧"


def test_a_cut_keeps_fence_lines_whole() -> None:
    body = "text\n```python\ncode"
    assert not is_safe_cut(body, 8, complete=True)  # inside "```python"
    assert is_safe_cut(body, 5, complete=True)  # at the start of the fence line
    assert not is_safe_cut("abc```x", 3, complete=True)  # the next message would start with ```
    assert is_safe_cut("abc``x", 3, complete=True)
    assert not is_safe_cut("abc``", 3, complete=False)  # a third backtick may still come


def test_fence_tracker_follows_fences_line_by_line() -> None:
    tracker = FenceTracker()
    for piece in ["intro\n``", "`py", "thon\nx = 1\n~~~\n", "still code\n", "```\nout\n", "~~~~~"]:
        tracker.feed(piece)
    python = Fence("```", "python")
    assert tracker.state_at(6) is None
    assert tracker.state_at(16) == python
    assert tracker.state_at(len("intro\n```python\nx = 1\n~~~\nstill code\n")) == python  # ~~~ is code
    assert tracker.open_fence is None
    tracker.close()  # the last line, "~~~~~", opens a block once the reply has ended
    assert tracker.open_fence == Fence("~~~~~", "")


def test_backticks_in_the_info_string_do_not_open_a_fence() -> None:
    tracker = FenceTracker()
    tracker.feed("```not`a fence\n")
    assert tracker.open_fence is None


def test_splitter_shows_nothing_new_rather_than_cut_through_a_fence_line() -> None:
    splitter = ReplySplitter(lambda markdown: markdown, 30, "chars", indicator="")
    splitter.append("```" + "`" * 40)  # a fence line longer than a message, still arriving
    assert splitter.streaming_text() is None and splitter.finalised == []
