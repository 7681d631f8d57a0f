import msgpack
import pytest

from broker.core.errors import BadRequest, BadTopic, UnsupportedMediaType
from broker.hub import PublishItem
from broker.wire import codecs


@pytest.mark.parametrize(
    ("ctype", "body", "expected"),
    [
        (None, b"hi", ("hi", False)),
        ("text/plain", "값".encode(), ("값", False)),
        ("Text/Plain; charset=UTF-8", b"x", ("x", False)),
        ("application/json", '{ "a" : "값" }'.encode(), ('{ "a" : "값" }', True)),
        ("application/json; charset=utf-8", b"[1]", ("[1]", True)),
        ("application/msgpack", msgpack.packb({"a": [1, "값"]}), ('{"a":[1,"값"]}', True)),
        ("application/x-msgpack", msgpack.packb("text"), ("text", False)),
    ],
)
def test_decode_body(ctype, body, expected):
    assert codecs.decode_body(ctype, body) == expected


@pytest.mark.parametrize(
    ("ctype", "body", "error"),
    [
        ("application/json", b"{", BadRequest),
        ("application/json", b"Infinity", BadRequest),
        ("text/plain", b"\xff", BadRequest),
        ("application/msgpack", b"\xc1", BadRequest),
        ("application/msgpack", msgpack.packb({"b": b"\x00"}), BadRequest),
        ("application/xml", b"<a/>", UnsupportedMediaType),
        ("text/plain; charset=utf-16", b"x", UnsupportedMediaType),
    ],
)
def test_decode_body_errors(ctype, body, error):
    with pytest.raises(error):
        codecs.decode_body(ctype, body)


def test_decode_batch():
    body = (
        b'{"events": [{"topic": "a", "data": "t"}, {"topic": "b", "data": {"x": 1}, "event": "e"}]}'
    )
    assert codecs.decode_batch("application/json", body) == [
        PublishItem("a", "t", None, False),
        PublishItem("b", '{"x": 1}', "e", True),  # kept as sent, like a single publish
    ]
    packed = msgpack.packb({"events": [{"topic": "a", "data": [1]}]})
    assert codecs.decode_batch("application/msgpack", packed) == [
        PublishItem("a", "[1]", None, True)
    ]


def test_batch_errors_name_the_item():
    with pytest.raises(BadTopic, match=r"events\[1\]"):
        codecs.decode_batch(
            "application/json", b'{"events": [{"topic": "a", "data": 1}, {"topic": "", "data": 1}]}'
        )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"data=hello", codecs.PublishForm("hello")),
        (b"data=", codecs.PublishForm("")),
        (b"data=%EA%B0%92+x%0Ay", codecs.PublishForm("값 x\ny")),
        (b"data=a&event=progress", codecs.PublishForm("a", event="progress")),
        (b"event=&data=a", codecs.PublishForm("a")),
        (b"data=a&retain=on&final=0", codecs.PublishForm("a", retain=True, final=False)),
        (b"data=a&retain=TRUE", codecs.PublishForm("a", retain=True)),
    ],
)
def test_decode_form(body, expected):
    assert codecs.decode_form(body) == expected


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"hello", "needs a data field: curl -d data=hello"),
        (b"", "needs a data field"),
        (b"event=x", "needs a data field"),
        (b"data=a&colour=red", "unknown form field 'colour'"),
        (b"data=a&data=b", "given twice"),
        (b"data=a&retain=maybe", "must be 1/true/on"),
        (b"data=%ff", "percent-encoded UTF-8"),
        (b"data=\xff", "not valid UTF-8"),
        (b"&".join([b"data=a"] + [b"x=1"] * 40), "at most 16 fields"),
    ],
)
def test_decode_form_errors(body, words):
    with pytest.raises(BadRequest) as raised:
        codecs.decode_form(body)
    assert words in raised.value.message


def test_every_415_names_what_is_accepted():
    with pytest.raises(UnsupportedMediaType) as single:
        codecs.decode_body("image/png", b"x")
    assert codecs.ACCEPTED in single.value.message
    assert "application/x-www-form-urlencoded" in single.value.message
    with pytest.raises(UnsupportedMediaType) as batch:
        codecs.decode_batch("text/plain", b"x")
    assert codecs.ACCEPTED_BATCH in batch.value.message
