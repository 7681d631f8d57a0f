import pytest

from broker.wire import sse

CASES = [
    ("plain", "data: plain\n"),
    ("", "data: \n"),
    (" lead", "data:  lead\n"),
    ("a\nb", "data: a\ndata: b\n"),
    ("a\r\nb", "data: a\ndata: b\n"),
    ("a\rb", "data: a\ndata: b\n"),
    ("a\n", "data: a\ndata: \n"),
    ("a\r\n\r\nb", "data: a\ndata: \ndata: b\n"),
    ("u\u2028v\u0085w\x0cx", "data: u\u2028v\u0085w\x0cx\n"),  # not line breaks for SSE
    ("안녕하세요", "data: 안녕하세요\n"),
]


@pytest.mark.parametrize(("data", "lines"), CASES)
def test_data_lines_split_only_on_cr_lf_crlf(data, lines):
    assert sse.data_lines(data) == lines


def test_frame_has_id_optional_event_and_ends_with_blank_line():
    assert sse.encode_frame("a-1", None, "x") == b"id: a-1\ndata: x\n\n"
    assert sse.encode_frame("a-2", "progress", "x", retry_ms=10) == (
        b"id: a-2\nevent: progress\nretry: 10\ndata: x\n\n"
    )


def test_utf8_without_bom_or_escapes():
    frame = sse.encode_frame("a-1", None, "값")
    assert frame == "id: a-1\ndata: 값\n\n".encode()
    assert not frame.startswith(b"\xef\xbb\xbf")


def test_notice_is_a_real_event_with_json_data():
    frame = sse.encode_notice("a-1", "broker.dropped", {"dropped": 3, "resume_from": "a-1"})
    assert frame == b'id: a-1\nevent: broker.dropped\ndata: {"dropped":3,"resume_from":"a-1"}\n\n'


def test_heartbeat_is_a_comment_without_a_blank_line():
    assert sse.HEARTBEAT == b":\n"


def test_envelope_embeds_json_and_splits_multiline_json_safely():
    codec = sse.SseCodec(envelope=True)
    frame = codec.notice("broker.start", "a-0", {"position": "a-0"})
    assert frame == (
        b"id: a-0\nevent: broker.start\n"
        b'data: {"id":"a-0","topic":null,"event":"broker.start","data":{"position":"a-0"}}\n\n'
    )
    text = sse.envelope_json("a-1", "t", None, '{\n "k": 1\n}')
    assert text == '{"id":"a-1","topic":"t","event":null,"data":{\n "k": 1\n}}'
