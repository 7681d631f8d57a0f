"""Fuzz the public port's HTTP surface: request heads and publish bodies (harness.py says
which properties hold after every case and at the end of each target)."""

from __future__ import annotations

import json

import msgpack
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.harness import FUZZ_SETTINGS, TOPICS, Target

BROKER_ENV = {"BROKER_WEBSOCKET_ALLOW_PUBLISH": "true"}

METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "PRI", "CONNECT", "TRACE"]
PATHS = [
    "/topics/fz/a",
    "/topics/fz/a/events",
    "/topics/fz/a/ws",
    "/topics/fz/a/retained",
    "/events?topic=fz/a&topic=fz/b",
    "/ws",
    "/ws?topic=fz/a",
    "/publish",
    "/stats",
    "/metrics",
    "/healthz",
    "/readyz",
    "/",
    "/client.js",
    "*",
]
HEADER_VALUES = {
    "Host": [b"x", b"127.0.0.1:1", b"xn--zz", b"[::1]"],
    "Connection": [b"Upgrade", b"close", b"keep-alive", b"Upgrade, HTTP2-Settings"],
    "Upgrade": [b"websocket", b"h2c", b"WebSocket"],
    "Sec-WebSocket-Key": [b"dGhlIHNhbXBsZSBub25jZQ==", b"", b"short"],
    "Sec-WebSocket-Version": [b"13", b"8", b""],
    "Sec-WebSocket-Protocol": [b"broker.json", b"broker.msgpack", b"a, b"],
    "Sec-WebSocket-Extensions": [b"permessage-deflate", b"x; y=1"],
    "Origin": [b"https://evil.example", b"null"],
    "Content-Type": [
        b"application/json",
        b"application/msgpack",
        b"text/plain",
        b"text/plain; charset=utf-8",
    ],
    "Content-Length": [b"0", b"1", b"-1", b"99999999999999999999", b"1, 1"],
    "Transfer-Encoding": [b"chunked", b"gzip", b"chunked, chunked"],
    "Expect": [b"100-continue", b"nope"],
    "Authorization": [b"Bearer x", b"Basic eDp5", b"Bearer "],
    "Cookie": [b"broker_token=x", b"a=b; broker_token="],
    "Last-Event-ID": [b"0", b"abc-1", b"\xff", b"x" * 1100],
    "Accept": [b"text/event-stream", b"*/*"],
    "HTTP2-Settings": [b"AAMAAABkAARAAAAAAAIAAAAA"],
    "X-Forwarded-For": [b"1.2.3.4"],
    "User-Agent": [b"fuzz"],
}

any_bytes = st.binary(max_size=24)
header_names = st.one_of(
    st.sampled_from(sorted(HEADER_VALUES)),
    st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12),
    st.binary(min_size=1, max_size=8).map(lambda b: b.decode("latin-1")),
)


@st.composite
def header(draw: st.DrawFn) -> tuple[bytes, bytes]:
    name = draw(header_names)
    known = HEADER_VALUES.get(name, [b"v"])
    value = draw(
        st.one_of(
            st.sampled_from(known),
            any_bytes,
            # a known value with one byte of any value inserted
            st.tuples(st.sampled_from(known), st.integers(0, 255), st.integers(0, 40)).map(
                lambda t: t[0][: t[2]] + bytes([t[1]]) + t[0][t[2] :]
            ),
        )
    )
    return name.encode("latin-1"), value


@st.composite
def request_head(draw: st.DrawFn) -> bytes:
    method = draw(
        st.one_of(
            st.sampled_from(METHODS),
            st.binary(min_size=1, max_size=8).map(lambda b: b.decode("latin-1")),
        )
    )
    path = draw(
        st.one_of(
            st.sampled_from(PATHS),
            st.binary(max_size=30).map(lambda b: "/" + b.decode("latin-1")),
            st.tuples(st.sampled_from(PATHS), st.binary(max_size=20)).map(
                lambda t: t[0] + ("&" if "?" in t[0] else "?") + t[1].decode("latin-1")
            ),
        )
    )
    version = draw(
        st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x", ""])
    )
    fields = [(b"Host", b"x")] if draw(st.booleans()) else []
    fields += draw(st.lists(header(), max_size=8))
    body = draw(st.binary(max_size=40))
    names = {name.lower() for name, _ in fields}
    if b"content-length" not in names and b"transfer-encoding" not in names:
        fields.append((b"Content-Length", str(len(body)).encode()))
    line = f"{method} {path} {version}".encode("latin-1")
    separator = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"]))
    head = line + separator + b"".join(n + b": " + v + separator for n, v in fields) + separator
    return head + body


#: Heads that once ended the process (issue 17): one non-ASCII byte in an upgrade field,
#: and an ASCII Host that is not IDNA (wsproto raised UnicodeError on both).
CRASHED_THE_BROKER = [
    b"GET /topics/fz/a/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade, a\xd0"
    b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: xn--zz\r\nUpgrade: websocket\r\nConnection: Upgrade"
    b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
    b"\r\nSec-WebSocket-Protocol: broker.json\xff\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
    b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
]


def test_request_heads(fuzz_broker, bystander):
    """Request lines, every header name (WebSocket and upgrade ones included), every byte."""
    target = Target("heads", fuzz_broker, bystander)

    @FUZZ_SETTINGS
    @example(CRASHED_THE_BROKER[0])
    @example(CRASHED_THE_BROKER[1])
    @example(CRASHED_THE_BROKER[2])
    @given(request_head())
    def case(data: bytes) -> None:
        target.check(target.exchange(data), case=data)

    case()
    target.finish()


# -- publish bodies ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-(2**63), 2**63), children, max_size=4)
    ),
    max_leaves=12,
)
topics = st.one_of(
    st.sampled_from(TOPICS), st.text(max_size=12), st.sampled_from(["", "a//b", "x/events", "é"])
)
batch_items = st.one_of(
    st.fixed_dictionaries(
        {"topic": topics, "data": json_values},
        optional={
            "event": st.one_of(st.text(max_size=10), st.sampled_from(["x", "error", "broker.a"]))
        },
    ),
    json_values,
)
batches = st.one_of(
    st.fixed_dictionaries({"events": st.lists(batch_items, max_size=4)}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)


def _json(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(
    json_values.map(_json),
    batches.map(_json),
    st.binary(max_size=60),
    msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    batches.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.text(max_size=40).map(str.encode),
    st.sampled_from(
        [
            b"NaN",
            b"Infinity",
            b"1e999999",
            b"[" * 500,
            b"9" * 5000,
            b'{"events":[{"topic":"fz/a","data":1e400}]}',
            b'{"a":' * 300,
            b"\xef\xbb\xbf{}",
        ]
    ),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/msgpack",
            "text/plain",
            "text/plain; charset=utf-8",
            "application/json; charset=latin-1",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ]
    ),
    st.text(max_size=20),
)
queries = st.lists(
    st.sampled_from(
        ["event=x", "retain=1", "event=bad%20type", "event=broker.x", "event=", "retain=yes"]
    )
    | st.text(max_size=10),
    max_size=3,
).map(lambda parts: ("?" + "&".join(parts)) if parts else "")


@st.composite
def publish_request(draw: st.DrawFn) -> bytes:
    path = draw(st.one_of(st.just("/publish"), topics.map(lambda t: "/topics/" + t))) + draw(
        queries
    )
    body = draw(bodies)
    content_type = draw(content_types)
    framing = draw(
        st.sampled_from(["length"] * 6 + ["chunked"] * 2 + ["short", "long", "badchunk"])
    )
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n".encode()
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    if framing == "short":  # the rest of the body is read as the next request
        return head + b"Content-Length: %d\r\n\r\n" % (len(body) // 2) + body
    if framing == "long":  # the body never completes: the broker must close on EOF
        return head + b"Content-Length: %d\r\n\r\n" % (len(body) + 5) + body
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    if framing == "badchunk":
        chunks = (
            draw(st.sampled_from([b"zz\r\n", b"-1\r\n", b"fffffffffffffffff\r\n", b"1;\x00\r\n"]))
            + chunks
        )
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


def test_publish_bodies(fuzz_broker, bystander):
    """Publish and batch bodies: JSON, msgpack, garbage; wrong types, lengths, chunking."""
    target = Target("bodies", fuzz_broker, bystander)

    @FUZZ_SETTINGS
    @given(publish_request())
    def case(data: bytes) -> None:
        target.check(target.exchange(data), case=data)

    case()
    target.finish()
