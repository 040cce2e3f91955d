"""The SSE decoder: its whole-read fast path must give what the line-by-line rules give."""

from __future__ import annotations

import pytest

from core.llm.sse import ServerEvent, SSEDecoder

# Every shape the decoder knows, with plain one-line `data: ` events (the fast path's) between them.
BODY = (
    b'data: {"a": 1}\n\n'
    b"data:no-space\n\n"
    b": keep-alive\n\n"
    b'data: {"b": 2}\n\n'
    b"event: error\ndata: x\ndata: y\n\n"
    b"\n\n"
    b"data:  two spaces\n\n"
    b'data: {"c": 3}\n\n'
    b"retry: 10\ndata\n\n"
    b"data: a\rb\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [
    ServerEvent(b'{"a": 1}'),
    ServerEvent(b"no-space"),
    ServerEvent(b'{"b": 2}'),
    ServerEvent(b"x\ny", b"error"),
    ServerEvent(b" two spaces"),
    ServerEvent(b'{"c": 3}'),
    ServerEvent(b""),
    ServerEvent(b"a\rb"),
    ServerEvent(b"[DONE]"),
]


def decode(*reads: bytes) -> list[ServerEvent]:
    decoder = SSEDecoder()
    events = [event for read in reads for event in decoder.feed(read)]
    return events + decoder.close()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_body_split_at_any_byte_gives_the_events_of_the_whole(newline: bytes) -> None:
    body = BODY.replace(b"\n", newline)
    assert decode(body) == EVENTS
    for at in range(len(body) + 1):
        assert decode(body[:at], body[at:]) == EVENTS, at
    assert decode(*(body[i : i + 1] for i in range(len(body)))) == EVENTS


def test_plain_events_split_at_any_two_bytes_lose_nothing() -> None:
    body = b"".join(b'data: {"n": %d}\n\n' % n for n in range(4))
    events = [ServerEvent(b'{"n": %d}' % n) for n in range(4)]
    for first in range(len(body) + 1):
        for second in range(first, len(body) + 1):
            assert decode(body[:first], body[first:second], body[second:]) == events, (first, second)


def test_a_read_that_looks_plain_continues_the_event_an_earlier_read_began() -> None:
    assert decode(b"data: a\n", b"data: b\n\n") == [ServerEvent(b"a\nb")]
    assert decode(b"event: error\n", b"data: b\n\n") == [ServerEvent(b"b", b"error")]
    assert decode(b"data: a\r", b"\n\r\ndata: b\r\n\r\n") == [ServerEvent(b"a"), ServerEvent(b"b")]


def test_lines_ending_in_lf_and_crlf_mix_and_a_lone_cr_stays_in_the_data() -> None:
    assert decode(b"data: a\r\n\ndata: b\n\r\ndata: c\r\r\n\r\n") == [
        ServerEvent(b"a"),
        ServerEvent(b"b"),
        ServerEvent(b"c\r"),
    ]


def test_the_body_ending_without_a_blank_line_still_gives_its_last_event() -> None:
    assert decode(b"data: a\n\ndata: b") == [ServerEvent(b"a"), ServerEvent(b"b")]
    assert decode(b"data: a\r\n\r\ndata: b\r") == [ServerEvent(b"a"), ServerEvent(b"b")]
    assert decode(b"data: a\n") == [ServerEvent(b"a")]
    assert decode(b": just a comment") == []
