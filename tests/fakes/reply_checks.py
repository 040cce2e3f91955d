"""Independent checks of what a streamed reply showed: fences balanced, parts rebuilding the output.

They read fences with their own small CommonMark scanner, not `core.streaming.fences`, and rebuild
the output by removing only the fence lines a split may add.
"""

from __future__ import annotations

import re
from collections.abc import Callable

FENCE_LINE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")


def open_fence(lines: list[str]) -> tuple[str, str] | None:
    """(marker, info) of the fence left open after these lines, per CommonMark."""
    state: tuple[str, str] | None = None
    for line in lines:
        match = FENCE_LINE.fullmatch(line)
        if match is None:
            continue
        run, rest = match.group(1), match.group(2)
        if state is None:
            if not (run[0] == "`" and "`" in rest):
                state = (run, rest.strip())
        elif run[0] == state[0][0] and len(run) >= len(state[0]) and not rest.strip():
            state = None
    return state


def fence_at(output: str, offset: int) -> tuple[str, str] | None:
    """The fence open at `offset`: complete lines only, except at the very end of the output."""
    lines = output[:offset].split("\n")
    return open_fence(lines if offset >= len(output) else lines[:-1])


def balanced(text: str) -> bool:
    return open_fence(text.split("\n")) is None


def reassembles(parts: list[str], output: str) -> bool:
    """Whether removing the fence lines a split may add turns `parts` back into `output`.

    Part i+1 starts with the opening line of the fence open where part i ended (and only then);
    part i then ends with that fence's marker (after a newline added if it had none). A trailing
    whitespace-only rest of the output may be left out.
    """

    def bodies(text: str, end_state: Callable[[int], tuple[str, str] | None], offset: int) -> list[str]:
        found = []
        if output.startswith(text, offset) and end_state(offset + len(text)) is None:
            found.append(text)
        run = len(text) - len(text.rstrip(text[-1:])) if text[-1:] in ("`", "~") else 0
        for marker_len in range(3, run + 1):
            marker = text[-marker_len:]
            rest = text[:-marker_len]
            for body in (rest, rest[:-1] if rest.endswith("\n") else None):
                if body is None or not output.startswith(body, offset):
                    continue
                state = end_state(offset + len(body))
                if state is not None and state[0] == marker:
                    found.append(body)
        return found

    def match(index: int, offset: int) -> bool:
        if index == len(parts):
            return not output[offset:].strip()
        text = parts[index]
        opened = fence_at(output, offset) if index else None
        if opened is not None:
            opening = f"{opened[0]}{opened[1]}\n"
            if not text.startswith(opening):
                return False
            text = text[len(opening) :]
        last = index == len(parts) - 1

        def end_state(end: int) -> tuple[str, str] | None:
            if last and not output[end:].strip():
                return fence_at(output, len(output))
            return fence_at(output, end)

        return any(match(index + 1, offset + len(body)) for body in bodies(text, end_state, offset))

    return match(0, 0)
