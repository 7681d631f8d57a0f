"""The data plane's HTTP/1.1 parser, held to h11 as an oracle.

Every head ours accepts, h11 must accept with the same method, target and fields; ours
refuses more than h11 only in the documented cases (broker/edge/http1.py). The one leniency,
blank lines before a request line (RFC 9112 §2.2), is normalised away before asking h11.
"""

import random

import h11
import pytest
import trio

from broker.core.errors import (
    BadRequest,
    ClientError,
    HeadersTooLarge,
    NotImplementedCoding,
    PayloadTooLarge,
    VersionNotSupported,
)
from broker.edge.http1 import ConnectionDone, HttpConnection, NotHttp1, parse_head

MAX_HEAD = 16 * 1024

VALID = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /topics/t/events?topic=a&last=5 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Accept: text/event-stream\r\nLast-Event-ID: abc-1z.def-2\r\n\r\n",
    b"POST /topics/bench HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
    b"Content-Length: 60\r\n\r\n",
    b"POST /publish HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /publish HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nhOsT: a\r\nX-Empty:\r\nX-Spaces:   padded value \t \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nAccept: a\r\nAccept: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\nOrigin: https://x.example\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"POST /topics/t HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    b"M-._~!#$%&'*+^`| /%7e?a=%20 HTTP/1.1\r\nHost: a\r\n\r\n",
]

# (head, status): refused by both parsers.
INVALID = [
    (b"\x00\x03\x01garbage\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\n: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),  # bare CR
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        501,
    ),
]

# Refused by ours, accepted by h11: each refusal is allowed by RFC 9112 and closes a door.
STRICTER = [
    (b"GET / HTTP/1.1\nHost: a\n\n", 400),  # bare LF
    (b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),  # obsolete line folding
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),  # control character
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),  # smuggling
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
]


def h11_request(data: bytes) -> h11.Request | None:
    """h11's verdict: the request, ``None`` if incomplete; raises if it refuses."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data.lstrip(b"\r\n"))
    event = conn.next_event()
    return None if event is h11.NEED_DATA else event


def h11_fields(request: h11.Request) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in request.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        if key == "transfer-encoding":
            text = text.lower()
        fields[key] = f"{fields[key]}, {text}" if key in fields else text
    return fields


def ours(data: bytes):
    request = parse_head(data, 0, MAX_HEAD)
    if request is None:
        return None
    fields = dict(request.headers)
    if "transfer-encoding" in fields:
        fields["transfer-encoding"] = fields["transfer-encoding"].lower()
    return request.method, request.target, fields


def assert_same_as_h11(data: bytes) -> None:
    mine = ours(data)
    theirs = h11_request(data)
    assert mine is not None
    assert theirs is not None
    assert mine == (theirs.method.decode(), theirs.target.decode(), h11_fields(theirs))


@pytest.mark.parametrize("head", VALID)
def test_valid_heads_parse_exactly_as_h11_parses_them(head):
    assert_same_as_h11(head)
    assert_same_as_h11(b"\r\n" + head)  # a stray CRLF before a request is tolerated


@pytest.mark.parametrize(("head", "status"), INVALID)
def test_heads_h11_refuses_are_refused(head, status):
    with pytest.raises(h11.RemoteProtocolError):
        h11_request(head)
    with pytest.raises(ClientError) as refused:
        parse_head(head, 0, MAX_HEAD)
    assert refused.value.status == status


@pytest.mark.parametrize(("head", "status"), STRICTER)
def test_documented_refusals_where_h11_is_lenient(head, status):
    assert h11_request(head) is not None
    with pytest.raises(ClientError) as refused:
        parse_head(head, 0, MAX_HEAD)
    assert refused.value.status == status
    assert type(refused.value) in (BadRequest, VersionNotSupported)


def test_request_fields_the_data_plane_uses():
    post = parse_head(VALID[2] + b"x" * 60 + b"GET ", 0, MAX_HEAD)
    assert post is not None
    assert (post.content_length, post.chunked, post.keep_alive) == (60, False, True)
    assert post.after_head == b"x" * 60 + b"GET "
    assert post.raw.startswith(b"POST /topics/bench HTTP/1.1\r\n")
    assert parse_head(VALID[3], 0, MAX_HEAD).chunked
    assert not parse_head(VALID[5], 0, MAX_HEAD).keep_alive  # HTTP/1.0
    assert parse_head(VALID[6], 0, MAX_HEAD).keep_alive
    assert not parse_head(VALID[7], 0, MAX_HEAD).keep_alive
    assert parse_head(VALID[15], 0, MAX_HEAD).expects_continue
    assert parse_head(VALID[2][:-2], 0, MAX_HEAD) is None  # incomplete


def test_head_size_is_bounded_whole_or_in_pieces():
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    with pytest.raises(HeadersTooLarge):
        parse_head(big, 0, MAX_HEAD)
    with pytest.raises(HeadersTooLarge):
        parse_head(big[:-4], 0, MAX_HEAD)  # no end in sight, already too long
    # Many spaces and tabs inside a value: refused or accepted in linear time.
    spaced = b"GET / HTTP/1.1\r\nHost: a\r\nX: a" + b" \t" * 5000 + b"\x01\r\n\r\n"
    with pytest.raises(BadRequest):
        parse_head(spaced, 0, MAX_HEAD)


MUTATIONS = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"\x7f", b"\xff", b"a", b"/", b"\r\n"]


def test_thousands_of_mutated_heads_never_accept_what_h11_refuses():
    rng = random.Random(20261125)
    accepted = refused = 0
    for _ in range(6000):
        data = bytearray(rng.choice(VALID))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) - 3)  # leave the final CRLF CRLF alone
            action = rng.random()
            if action < 0.4:
                data[at : at + 1] = rng.choice(MUTATIONS)
            elif action < 0.7:
                data[at:at] = rng.choice(MUTATIONS)
            else:
                del data[at]
        head = bytes(data)
        try:
            mine = ours(head)
        except ClientError:
            refused += 1
            continue
        if mine is None:
            continue
        accepted += 1
        try:
            theirs = h11_request(head)
        except h11.RemoteProtocolError as exc:
            pytest.fail(f"accepted {head!r}, which h11 refuses: {exc}")
        assert theirs is not None, head
        assert mine == (theirs.method.decode(), theirs.target.decode(), h11_fields(theirs)), head
    assert accepted > 500
    assert refused > 2000


# -- the connection: bodies, pipelining, protocols, over a real socket pair --------------


async def exchange(chunks: list[bytes], action):
    """Feed ``chunks`` to an HttpConnection over a socketpair and run ``action`` on it."""
    left, right = trio.socket.socketpair()
    async with trio.open_nursery() as nursery:
        client = trio.SocketStream(left)

        async def feed():
            for chunk in chunks:
                await client.send_all(chunk)
                await trio.sleep(0.001)  # arrive in separate reads
            await client.send_eof()

        nursery.start_soon(feed)
        connection = HttpConnection(trio.SocketStream(right), max_head_bytes=MAX_HEAD)
        try:
            return await action(connection)
        finally:
            nursery.cancel_scope.cancel()


async def test_pipelined_requests_with_bodies_in_pieces():
    a = b"POST /topics/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    b = b"POST /topics/b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b += b"3;ext=1\r\nabc\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nTrailer: t\r\n\r\n"
    c = b"GET /topics/c/events HTTP/1.1\r\nHost: h\r\n\r\n"
    stream = a + b + c
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]

    async def read_all(connection):
        seen = []
        for _ in range(2):
            request = await connection.next_request()
            seen.append((request.target, await connection.read_body(request, 1000)))
        last = await connection.next_request()
        seen.append((last.target, b""))
        with pytest.raises(ConnectionDone):
            await connection.next_request()
        return seen

    assert await exchange(pieces, read_all) == [
        ("/topics/a", b"hello"),
        ("/topics/b", b"abc" + b"x" * 16),
        ("/topics/c/events", b""),
    ]
    assert await exchange([stream], read_all) == await exchange(pieces, read_all)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"zz\r\nab\r\n0\r\n\r\n", BadRequest),
        (b"2\r\nabc\r\n0\r\n\r\n", BadRequest),
        (b"2\r\nab\r\n0\r\nBad Trailer\r\n\r\n", BadRequest),
        (b"ff\r\n" + b"a" * 255 + b"\r\n0\r\n\r\n", PayloadTooLarge),
        (b"2\r\nab", ConnectionDone),
    ],
)
async def test_malformed_chunked_bodies_are_refused(body, error):
    head = b"POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"

    async def read(connection):
        request = await connection.next_request()
        with pytest.raises(error):
            await connection.read_body(request, 100)

    await exchange([head, body], read)


async def test_tls_and_http2_are_recognised_for_hypercorn():
    async def first(connection):
        with pytest.raises(NotHttp1) as other:
            await connection.next_request()
        return other.value.protocol, other.value.raw

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    assert await exchange([preface[:5], preface[5:]], first) == ("h2", preface)
    assert await exchange([b"\x16\x03\x01\x00"], first) == ("tls", b"\x16\x03\x01\x00")


async def test_a_body_on_a_get_closes_the_connection_unless_it_is_already_here():
    async def finish(connection):
        request = await connection.next_request()
        connection.finish_bodyless(request)
        return request.keep_alive

    get = b"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n"
    assert await exchange([get + b"body"], finish) is True
    assert await exchange([get], finish) is False


def test_errors_name_the_problem():
    with pytest.raises(NotImplementedCoding, match="chunked"):
        parse_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br\r\n\r\n", 0, MAX_HEAD)
    with pytest.raises(BadRequest, match="request line"):
        parse_head(b"GET\r\nHost: a\r\n\r\n", 0, MAX_HEAD)
    with pytest.raises(BadRequest, match="header field"):
        parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", 0, MAX_HEAD)


def test_a_repeated_head_parses_the_same_from_the_cache():
    head = VALID[2]
    first = parse_head(head + b"x" * 60, 0, MAX_HEAD)
    again = parse_head(b"junk" + head + b"y" * 60, 4, MAX_HEAD)
    assert (again.method, again.target, again.headers) == (
        first.method,
        first.target,
        first.headers,
    )
    assert (again.content_length, again.keep_alive) == (60, True)
    assert again.after_head == b"y" * 60  # the request's own bytes, not the cached one's
    again.keep_alive = False  # per request: the next one with this head is unaffected
    assert parse_head(head, 0, MAX_HEAD).keep_alive
