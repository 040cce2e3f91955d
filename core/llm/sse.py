"""An incremental decoder of `text/event-stream` bodies (the Server-Sent Events wire format)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class ServerEvent:
    data: bytes
    event: bytes | None = None


class SSEDecoder:
    """Feed body bytes as they arrive; get back the events they complete.

    Follows the format's rules that matter for chat completions: `data:` lines of one event are
    joined with newlines, an empty line ends the event, `:` lines are comments, CRLF and LF both end
    a line, and a line may arrive split over several reads.
    """

    __slots__ = ("_data", "_event", "_partial")

    def __init__(self) -> None:
        self._partial = b""
        self._data: list[bytes] = []
        self._event: bytes | None = None

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        buffer = self._partial + chunk if self._partial else chunk
        crlf = b"\r" in buffer
        blank = b"\r\n\r\n" if crlf else b"\n\n"  # a line's end, then an empty line's
        pieces = buffer.split(blank)  # the events, then what follows the last blank line
        complete = len(pieces) - 1
        # The common shape, checked over the whole buffer at once: no event pending, no LF but the
        # blank lines' (so each piece is one line, and any CR left is one within it), each event a
        # `data: ` line.
        if (
            not self._data
            and self._event is None
            and buffer.count(b"\n") == 2 * complete
            and buffer.startswith(b"data: ") + buffer.count(blank + b"data: ")
            == complete + pieces[-1].startswith(b"data: ")
        ):
            self._partial = pieces[-1]
            return [ServerEvent(piece[6:]) for piece in pieces[:-1]]
        if crlf:  # the same as dropping each line's final CR: a CR with no LF yet stays in `_partial`
            buffer = buffer.replace(b"\r\n", b"\n")
        lines = buffer.split(b"\n")
        self._partial = lines.pop()
        events: list[ServerEvent] = []
        self._lines(lines, events)
        return events

    def close(self) -> list[ServerEvent]:
        """The body ended: an event whose blank line never came still counts."""
        events: list[ServerEvent] = []
        partial, self._partial = self._partial, b""
        self._lines((partial.rstrip(b"\r"), b"") if partial else (b"",), events)
        return events

    def _lines(self, lines: Iterable[bytes], events: list[ServerEvent]) -> None:
        data, event = self._data, self._event
        for line in lines:
            if not line:
                if data:
                    events.append(ServerEvent(b"\n".join(data), event))
                    data = []
                event = None
                continue
            name, colon, value = line.partition(b":")
            if not name:  # a comment (keep-alive)
                continue
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value
        self._data, self._event = data, event
