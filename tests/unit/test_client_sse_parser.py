"""The Python client's sans-IO SSE parser against the WHATWG event-stream rules (shared/SSE.md)."""

from __future__ import annotations

import pytest
from broker_client import ProtocolError, ServerSentEvent, SSEParser


def E(data: str, event: str = "message", id: str = "") -> ServerSentEvent:
    return ServerSentEvent(event=event, data=data, id=id)


# (name, stream, expected events)
CASES: list[tuple[str, bytes, list[ServerSentEvent]]] = [
    ("simple", b"data: hello\n\n", [E("hello")]),
    ("no space after colon", b"data:hello\n\n", [E("hello")]),
    ("only one space stripped", b"data:  two\n\n", [E(" two")]),
    ("multi-line data joined with LF", b"data: a\ndata: b\n\n", [E("a\nb")]),
    ("CRLF line ends", b"data: a\r\ndata: b\r\n\r\n", [E("a\nb")]),
    ("CR line ends", b"data: a\rdata: b\r\r", [E("a\nb")]),
    ("mixed line ends", b"data: a\r\ndata: b\rdata: c\n\n", [E("a\nb\nc")]),
    ("empty data line dispatches empty data", b"data\n\n", [E("")]),
    ("empty data: value", b"data:\n\n", [E("")]),
    ("two empty data lines", b"data\ndata\n\n", [E("\n")]),
    ("event type", b"event: progress\ndata: x\n\n", [E("x", event="progress")]),
    ("empty event type means message", b"event:\ndata: x\n\n", [E("x")]),
    ("event type does not persist", b"event: a\ndata: 1\n\ndata: 2\n\n", [E("1", "a"), E("2")]),
    ("comment ignored", b": heartbeat\ndata: x\n\n", [E("x")]),
    ("bare colon heartbeat", b":\n:\ndata: x\n\n", [E("x")]),
    ("comment-only block not dispatched", b": hi\n\n", []),
    ("unknown field ignored", b"foo: bar\ndata: x\n\n", [E("x")]),
    ("field names are case-sensitive", b"Data: x\nDATA: y\n\n", []),
    ("line without colon is a field with empty value", b"data\n\n", [E("")]),
    ("id attached", b"id: 7\ndata: x\n\n", [E("x", id="7")]),
    ("id persists", b"id: 7\ndata: x\n\ndata: y\n\n", [E("x", id="7"), E("y", id="7")]),
    ("empty id resets", b"id: 7\ndata: x\n\nid\ndata: y\n\n", [E("x", id="7"), E("y")]),
    (
        "id with NUL ignored",
        b"id: 7\ndata: x\n\nid: a\x00b\ndata: y\n\n",
        [E("x", id="7"), E("y", id="7")],
    ),
    ("id-only block updates later events", b"id: 9\n\ndata: y\n\n", [E("y", id="9")]),
    ("data-less block with event not dispatched", b"event: x\nid: 1\n\n", []),
    ("retry-only block not dispatched", b"retry: 1000\n\n", []),
    ("incomplete event at end dropped", b"data: done\n\ndata: partial\n", [E("done")]),
    ("no trailing blank line", b"data: x", []),
    ("BOM at start stripped", b"\xef\xbb\xbfdata: x\n\n", [E("x")]),
    ("only one BOM stripped", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", []),
    ("BOM later is data", b"data: \xef\xbb\xbfx\n\n", [E("\ufeffx")]),
    ("UTF-8 kept", "data: héllo ✓\n\n".encode(), [E("héllo ✓")]),
    ("bad UTF-8 replaced", b"data: \xff\n\n", [E("\ufffd")]),
    (
        "U+2028, NEL and form feed are not line breaks",
        "data: a\u2028b\x0cc\x85d\n\n".encode(),
        [E("a\u2028b\x0cc\x85d")],
    ),
    ("colon in value kept", b"data: a: b\n\n", [E("a: b")]),
    ("blank lines between events", b"\n\ndata: x\n\n\n\ndata: y\n\n", [E("x"), E("y")]),
    (
        "broker envelope frame",
        b'id: k3-1\nevent: broker.start\nretry: 2000\ndata: {"position":"k3-1"}\n\n',
        [E('{"position":"k3-1"}', event="broker.start", id="k3-1")],
    ),
]


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_whole_stream(stream: bytes, expected: list[ServerSentEvent]) -> None:
    assert SSEParser().feed(stream) == expected


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_byte_by_byte(stream: bytes, expected: list[ServerSentEvent]) -> None:
    parser = SSEParser()
    events = []
    for i in range(len(stream)):
        events.extend(parser.feed(stream[i : i + 1]))
    assert events == expected


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_two_way_split(stream: bytes, expected: list[ServerSentEvent]) -> None:
    for cut in range(len(stream) + 1):
        parser = SSEParser()
        assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == expected, cut


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n\r") == [E("a\nb")]
    assert parser.feed(b"\n") == []  # the LF of that CRLF, not a second blank line
    assert parser.feed(b"data: c\n\n") == [E("c")]


def test_cr_then_empty_chunk_then_lf() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n\n") == [E("a")]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (b"retry: 1500\n", 1500),
        (b"retry:1500\n", 1500),
        (b"retry: 0\n", 0),
        (b"retry: 1000x\n", None),
        (b"retry: -5\n", None),
        (b"retry: 1.5\n", None),
        (b"retry: \n", None),
        (b"retry:  100\n", None),  # a second space is part of the value
        ("retry: ١٢\n".encode(), None),  # digits, but not ASCII
        (b"retry: 10\nretry: abc\n", 10),  # an invalid value leaves the last valid one
    ],
)
def test_retry(lines: bytes, expected: int | None) -> None:
    parser = SSEParser()
    parser.feed(lines + b"\n")
    assert parser.retry_ms == expected


@pytest.mark.parametrize(
    ("stream", "last_event_id"),
    [
        (b"", ""),
        (b"id: 1\ndata: x\n\n", "1"),
        (b"id: 1\ndata: x\n\nid: 2\n\n", "2"),  # a data-less block still sets it
        (b"id: 1\ndata: x\n\nid: 2\n", "1"),  # not dispatched yet
        (b"id: 1\ndata: x\n\nid\n\n", ""),
    ],
)
def test_last_event_id(stream: bytes, last_event_id: str) -> None:
    parser = SSEParser()
    parser.feed(stream)
    assert parser.last_event_id == last_event_id


def test_multibyte_character_split_across_chunks() -> None:
    data = "data: €\n\n".encode()
    parser = SSEParser()
    assert parser.feed(data[:7]) == []
    assert parser.feed(data[7:]) == [E("€")]


def test_overlong_line_is_refused() -> None:
    parser = SSEParser(max_line_chars=10)
    with pytest.raises(ProtocolError):
        parser.feed(b"data: " + b"x" * 20)


def test_overlong_line_across_chunks_is_refused() -> None:
    parser = SSEParser(max_line_chars=10)
    parser.feed(b"data: xx")
    with pytest.raises(ProtocolError):
        parser.feed(b"xxxxxxxx")


def test_overlong_event_data_is_refused() -> None:
    parser = SSEParser(max_line_chars=12)
    parser.feed(b"data: 123456\n")
    with pytest.raises(ProtocolError):
        parser.feed(b"data: 789012\n")


def test_parser_matches_broker_encoder() -> None:
    """Whatever the broker's own encoder writes, this parser reads back (CR/LF in data → LF)."""
    from broker.wire.sse import encode_frame

    for data, expected in [
        ("plain", "plain"),
        ("a\nb", "a\nb"),
        ("a\r\nb\rc", "a\nb\nc"),
        ("", ""),
        (" lead", " lead"),
        ("x\u2028y", "x\u2028y"),
    ]:
        frame = encode_frame("o-1", "kind", data)
        assert SSEParser().feed(frame) == [E(expected, event="kind", id="o-1")]
