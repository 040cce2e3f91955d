"""Where a message may end when a reply outgrows it.

Preference: after a blank line (paragraph), after a newline, after a sentence, after a space, and
only then anywhere, never between a character and the marks that combine with it. A cut must also
leave every fence line whole, so that both parts read their fences as the full reply does.
"""

from __future__ import annotations

import re
import unicodedata

from core.streaming.fences import starts_like_fence

# A natural boundary earlier than this fraction of the room left is not worth a half-empty message.
MIN_FILL = 0.5
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*[ \t]+|[。！？][\"'”’)\]」』]*")
_ZWJ = "\u200d"
_MAX_STEPS_BACK = 32


def choose_cut(body: str, room: int, *, complete: bool) -> int | None:
    """The best place to end a message holding at most `body[:room]`.

    `complete` says whether `body` is the end of the reply; otherwise more text may follow, so a
    cut must not depend on characters that have not arrived, and None means "wait for more text".
    A complete body always gets a cut of at least 1, even if nothing fits (`room` 0): the reply
    must make progress.
    """
    room = max(1, min(room, len(body)))
    floor = max(1, int(room * MIN_FILL))
    for cut in (
        _after_last(body, "\n\n", floor, room),
        _after_last(body, "\n", floor, room),
        _after_sentence(body, floor, room, complete),
        _after_space(body, floor, room, complete),
    ):
        if cut:
            return cut
    return _hard_cut(body, room, complete)


def is_safe_cut(body: str, cut: int, *, complete: bool) -> bool:
    """Whether ending a message at `cut` keeps every fence line whole on both sides.

    A cut inside a line turns the rest of the line into the first line of the next message: that
    must not read as a fence line there, nor may the piece left at the end of this message.
    """
    if cut <= 0:
        return False
    if body[cut - 1] == "\n":
        return True
    line_start = body.rfind("\n", 0, cut) + 1
    if starts_like_fence(body[line_start : min(cut, line_start + 6)]):
        return False
    head = body[cut : cut + 7]
    more_may_follow = not complete and cut + len(head) == len(body)
    return not _may_start_fence(head, more_may_follow)


def _may_start_fence(head: str, more_may_follow: bool) -> bool:
    """Whether a line starting with `head` is, or may still become, a fence line."""
    indent = len(head[:3]) - len(head[:3].lstrip(" "))
    rest = head[indent:]
    if not rest:
        return more_may_follow
    char = rest[0]
    if char not in "`~":
        return False
    run = len(rest) - len(rest.lstrip(char))
    return run >= 3 or (run == len(rest) and more_may_follow)


def _after_last(body: str, separator: str, floor: int, room: int) -> int:
    found = body.rfind(separator, max(0, floor - len(separator)), room)
    return found + len(separator) if found >= 0 else 0


def _after_sentence(body: str, floor: int, room: int, complete: bool) -> int:
    ends = [match.end() for match in _SENTENCE_END.finditer(body, floor, room)]
    for cut in reversed(ends):
        if cut >= floor and is_safe_cut(body, cut, complete=complete):
            return cut
    return 0


def _after_space(body: str, floor: int, room: int, complete: bool) -> int:
    end = room
    for _ in range(_MAX_STEPS_BACK):
        space = body.rfind(" ", floor - 1, end)
        if space < 0:
            return 0
        if is_safe_cut(body, space + 1, complete=complete):
            return space + 1
        end = space
    return 0


def _hard_cut(body: str, room: int, complete: bool) -> int | None:
    for cut in range(room, 0, -1):
        if _between_graphemes(body, cut) and is_safe_cut(body, cut, complete=complete):
            return cut
    # No cut keeps fences whole (a fence line longer than the limit, or one still arriving).
    return room if complete else None


def _between_graphemes(body: str, cut: int) -> bool:
    if cut >= len(body):
        return True
    following, preceding = body[cut], body[cut - 1]
    if preceding == _ZWJ or (preceding == "\r" and following == "\n"):
        return False
    return not _extends_grapheme(following)


def _extends_grapheme(char: str) -> bool:
    code = ord(char)
    return (
        unicodedata.category(char) in {"Mn", "Mc", "Me"}
        or char == _ZWJ
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # skin tones
        or 0xE0020 <= code <= 0xE007F  # tag characters (flag sequences)
        or 0xE0100 <= code <= 0xE01EF
    )
