"""Code fences (``` or ~~~) in the model's Markdown, followed line by line as the text arrives.

The rules are CommonMark's for top-level fences: up to three spaces of indentation, a run of at least
three backticks or tildes, an info string (the language) after an opening run of backticks that
contains no backtick; a closing line is a run of the same character at least as long, then only
spaces. A line only counts once it is complete (its newline has arrived, or the reply has ended).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

_FENCE_LINE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")


@dataclass(frozen=True, slots=True)
class Fence:
    """An open code block: the run that opened it and its info string."""

    marker: str  # e.g. "```" or "~~~~"
    info: str  # e.g. "python"; "" when the block has no language

    @property
    def opening_line(self) -> str:
        return f"{self.marker}{self.info}\n"


def parse_opening(line: str) -> Fence | None:
    """The fence this line opens, if it is an opening fence line (without its newline)."""
    match = _FENCE_LINE.fullmatch(line)
    if match is None:
        return None
    marker, info = match.group(1), match.group(2)
    if marker[0] == "`" and "`" in info:
        return None
    return Fence(marker, info.strip())


def closes(line: str, fence: Fence) -> bool:
    """Whether this line (without its newline) closes `fence`."""
    match = _FENCE_LINE.fullmatch(line)
    if match is None:
        return False
    run = match.group(1)
    return run[0] == fence.marker[0] and len(run) >= len(fence.marker) and not match.group(2).strip()


def may_become_fence_line(start: str) -> bool:
    """Whether a line that starts with `start` could still turn out to be a fence line."""
    indent = len(start) - len(start.lstrip(" "))
    if indent > 3:
        return False
    rest = start[indent:]
    return rest[:3] in {"```", "~~~"} or rest in {"", "`", "``", "~", "~~"}


def starts_like_fence(partial_line: str) -> bool:
    """Whether this piece of a line, read as a whole line, would be a fence line."""
    indent = len(partial_line) - len(partial_line.lstrip(" "))
    return indent <= 3 and partial_line[indent : indent + 3] in {"```", "~~~"}


class FenceTracker:
    """Which fence is open at any offset of a growing text, fed incrementally.

    Only lines that may be fence lines are kept while incomplete, so feeding costs O(len(text))
    whatever the length of the lines.
    """

    def __init__(self) -> None:
        self._offsets: list[int] = [0]  # where each state begins: just past a fence line
        self._states: list[Fence | None] = [None]
        self._fed = 0
        self._line: str | None = ""  # the incomplete last line; None once it cannot be a fence line

    @property
    def open_fence(self) -> Fence | None:
        """The fence open after the last complete line."""
        return self._states[-1]

    def state_at(self, offset: int) -> Fence | None:
        """The fence open at `offset`, judged on the complete lines that end at or before it."""
        return self._states[bisect_right(self._offsets, offset) - 1]

    def feed(self, text: str) -> None:
        start = 0
        while (newline := text.find("\n", start)) >= 0:
            self._end_line(text[start:newline], self._fed + newline + 1)
            start = newline + 1
        self._fed += len(text)
        if self._line is not None and start < len(text):
            line = self._line + text[start:]
            self._line = line if may_become_fence_line(line) else None

    def close(self) -> None:
        """The text is complete: its last line counts even without a newline."""
        if self._line:
            self._end_line("", self._fed)
        self._line = ""

    def _end_line(self, piece: str, end: int) -> None:
        line, self._line = self._line, ""
        if line is None:
            return
        line += piece
        fence = self.open_fence
        if fence is not None:
            if closes(line, fence):
                self._transition(end, None)
        elif (opened := parse_opening(line)) is not None:
            self._transition(end, opened)

    def _transition(self, offset: int, state: Fence | None) -> None:
        self._offsets.append(offset)
        self._states.append(state)
