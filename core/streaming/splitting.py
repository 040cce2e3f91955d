"""A streamed reply as a list of messages ("parts") that each fit the platform's limit.

The model's Markdown is split, never the rendered text, so every part can keep its code fences
balanced: a fence open where a part ends is closed there and reopened (with its language) at the
start of the next part. Reading the parts in order without those added fence lines gives back the
model's output exactly; a whitespace-only tail that would need a message of its own is left out
(platforms refuse blank messages). A finalised part never changes.

Work per update is proportional to the current part only: the text before it is never re-read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.streaming.boundaries import choose_cut
from core.streaming.fences import Fence, FenceTracker
from core.streaming.length import LengthUnit, measure

NOTICE_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class Part:
    """One message of a reply."""

    reopened: Fence | None  # fence reopened at the start (it was open where the previous part ended)
    body: str  # a slice of the model's output, unchanged
    closed: Fence | None  # fence closed at the end (open where this part ends)
    notice: str | None  # caller's notice shown after the body (final part only)
    text: str  # what the platform is sent: the rendered Markdown


def part_markdown(reopened: Fence | None, body: str, closed: Fence | None, notice: str | None = None) -> str:
    markdown = (reopened.opening_line if reopened else "") + body
    if closed is not None:
        markdown += closed.marker if markdown.endswith("\n") else "\n" + closed.marker
    if notice:
        markdown = markdown + NOTICE_SEPARATOR + notice if markdown else notice
    return markdown


class ReplySplitter:
    """Holds a growing reply: finalised parts plus the current one.

    `indicator` is appended to the current part while it grows; `close_fences_while_streaming`
    closes a fence still open in the current part so the platform renders it as code meanwhile
    (left out where edits must stay append-only, as on a terminal).
    """

    def __init__(
        self,
        render: Callable[[str], str],
        max_length: int,
        unit: LengthUnit,
        *,
        indicator: str = "",
        close_fences_while_streaming: bool = True,
    ) -> None:
        self._render = render
        self._max_length = max_length
        self._unit = unit
        self._indicator = indicator
        self._close_while_streaming = close_fences_while_streaming
        self._fences = FenceTracker()
        self._parts: list[Part] = []
        self._pending: list[str] = []
        self._body = ""
        self._body_start = 0  # offset of the current part's body in the whole output
        self._reopened: Fence | None = None
        self._streaming_text: str | None = None
        self._stale = False

    @property
    def finalised(self) -> list[Part]:
        """Parts that are complete and will never change, in order."""
        return self._parts

    def append(self, text: str) -> None:
        if text:
            self._pending.append(text)
            self._stale = True

    def streaming_text(self) -> str | None:
        """The current part's text as shown while the reply grows (None while it is blank).

        Finalises earlier parts first when the text outgrew the current message.
        """
        if not self._stale:
            return self._streaming_text
        self._absorb()
        while True:
            closing = self._fences.open_fence if self._close_while_streaming else None
            text = self._render(part_markdown(self._reopened, self._body, closing)) + self._indicator
            if not self._body or self._fits(text):
                break
            if not self._split_off(complete=False):
                text = ""  # no safe place to split until more of this line arrives: show nothing new
                break
        self._streaming_text = text if self._body.strip() and text else None
        self._stale = False
        return self._streaming_text

    def finish(self, notice: str | None = None) -> list[Part]:
        """Every part of the complete reply, the notice after the last one (or as a part of its own)."""
        self._absorb()
        self._fences.close()
        while True:
            closing = self._fences.open_fence
            text = self._render(part_markdown(self._reopened, self._body, closing))
            if not self._body or self._fits(text):
                break
            self._split_off(complete=True)
        parts = list(self._parts)
        last: Part | None = None
        if self._body.strip():
            last = Part(self._reopened, self._body, closing, None, text)
            parts.append(last)
        if notice:
            # Only the live part takes the notice: a part finalised earlier never changes.
            with_notice = self._with_notice(last, notice) if last else None
            if with_notice is not None:
                parts[-1] = with_notice
            else:
                parts.append(self.notice_part(notice))
        return parts

    def _absorb(self) -> None:
        if not self._pending:
            return
        new = "".join(self._pending)
        self._pending.clear()
        self._fences.feed(new)
        self._body += new

    def _fits(self, text: str) -> bool:
        return measure(text, self._unit) <= self._max_length

    def _final_text(self, cut: int) -> str | None:
        """The rendered final text of a part ending at `cut`, if it fits."""
        closing = self._fences.state_at(self._body_start + cut)
        text = self._render(part_markdown(self._reopened, self._body[:cut], closing))
        return text if self._fits(text) else None

    def _room(self) -> int:
        """The longest prefix of the body that fits as a finished part (rendered length grows with it)."""
        low, high = 0, len(self._body)
        if self._final_text(high) is not None:
            return high
        while high - low > 1:
            middle = (low + high) // 2
            if self._final_text(middle) is not None:
                low = middle
            else:
                high = middle
        return low

    def _split_off(self, *, complete: bool) -> bool:
        """Finalise the longest part that fits from the front of the body; False if it must wait."""
        room = self._room()
        while True:
            cut = choose_cut(self._body, room, complete=complete)
            if cut is None:
                return False
            text = self._final_text(cut)
            if text is not None or cut <= 1:
                break
            room = cut - 1  # rendering made this shorter prefix longer; look further back
        closing = self._fences.state_at(self._body_start + cut)
        if text is None:  # not even one character fits: send it anyway rather than stall
            text = self._render(part_markdown(self._reopened, self._body[:cut], closing))
        self._parts.append(Part(self._reopened, self._body[:cut], closing, None, text))
        self._reopened = closing
        self._body = self._body[cut:]
        self._body_start += cut
        return True

    def _with_notice(self, last: Part, notice: str) -> Part | None:
        text = self._render(part_markdown(last.reopened, last.body, last.closed, notice))
        return Part(last.reopened, last.body, last.closed, notice, text) if self._fits(text) else None

    def notice_part(self, notice: str) -> Part:
        """The notice as a message of its own, shortened only if it alone exceeds the limit."""
        shown, text = notice, self._render(notice)
        kept = notice
        while not self._fits(text) and kept:
            kept = kept[: len(kept) * 9 // 10]
            shown = kept.rstrip() + "…"
            text = self._render(shown)
        return Part(None, "", None, shown, text)
