"""An incremental decoder of `text/event-stream` bodies (the Server-Sent Events wire format)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
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
        lines = (self._partial + chunk).split(b"\n") if self._partial else chunk.split(b"\n")
        self._partial = lines.pop()
        events: list[ServerEvent] = []
        for line in lines:
            self._line(line[:-1] if line.endswith(b"\r") else line, events)
        return events

    def close(self) -> list[ServerEvent]:
        """The body ended: an event whose blank line never came still counts."""
        events: list[ServerEvent] = []
        if self._partial:
            partial, self._partial = self._partial, b""
            self._line(partial.rstrip(b"\r"), events)
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[ServerEvent]) -> None:
        if not line:
            if self._data:
                events.append(ServerEvent(b"\n".join(self._data), self._event))
            self._data, self._event = [], None
            return
        name, colon, value = line.partition(b":")
        if not name:  # a comment (keep-alive)
            return
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
