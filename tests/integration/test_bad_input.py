"""Bad input gets a precise 4xx with a JSON body, publishes nothing, and hurts no one."""

import httpx
import msgpack
import pytest
import trio

from tests.support.servers import open_broker_server
from tests.support.sse_client import open_sse

CASES = [
    # (method, path, body, content type, status, code)
    ("POST", "/topics/bad%20topic", b"x", "text/plain", 400, "bad_topic"),
    ("POST", "/topics/a//b", b"x", "text/plain", 400, "bad_topic"),
    ("POST", "/topics/a/%2E%2E/b", b"x", "text/plain", 400, "bad_topic"),
    ("POST", "/topics/" + "x" * 201, b"x", "text/plain", 400, "bad_topic"),
    ("POST", "/topics/ok?event=error", b"x", "text/plain", 400, "bad_event_type"),
    ("POST", "/topics/ok?event=broker.start", b"x", "text/plain", 400, "bad_event_type"),
    ("POST", "/topics/ok?event=has%20space", b"x", "text/plain", 400, "bad_event_type"),
    ("POST", "/topics/ok", b"{nope", "application/json", 400, "bad_request"),
    ("POST", "/topics/ok", b"NaN", "application/json", 400, "bad_request"),
    ("POST", "/topics/ok", b"\xff\xfe", "text/plain", 400, "bad_request"),
    ("POST", "/topics/ok", b"\xc1", "application/msgpack", 400, "bad_request"),
    ("POST", "/topics/ok", msgpack.packb(b"bytes"), "application/msgpack", 400, "bad_request"),
    (
        "POST",
        "/topics/ok",
        b"a=b",
        "application/x-www-form-urlencoded",
        400,
        "bad_request",
    ),
    ("POST", "/topics/ok", b"x", "application/xml", 415, "unsupported_media_type"),
    ("POST", "/topics/ok", b"data=%ff", "application/x-www-form-urlencoded", 400, "bad_request"),
    ("POST", "/topics/ok", b"x", "text/plain; charset=latin-1", 415, "unsupported_media_type"),
    ("POST", "/publish", b'{"events": []}', "application/json", 400, "bad_request"),
    ("POST", "/publish", b'{"nope": 1}', "application/json", 400, "bad_request"),
    (
        "POST",
        "/publish",
        b'{"events": [{"topic": "a", "data": 1}, {"topic": "b c", "data": 2}]}',
        "application/json",
        400,
        "bad_topic",
    ),
    ("POST", "/publish", b'{"events": [{"topic": "a"}]}', "application/json", 400, "bad_request"),
    (
        "POST",
        "/publish",
        b'{"events": [{"topic": "a", "data": 1, "x": 2}]}',
        "application/json",
        400,
        "bad_request",
    ),
    ("POST", "/publish", b"text", "text/plain", 415, "unsupported_media_type"),
    ("GET", "/topics/ok", None, None, 405, "method_not_allowed"),
    ("POST", "/topics/ok/events", b"x", "text/plain", 405, "method_not_allowed"),
    ("GET", "/events", None, None, 400, "bad_request"),
    ("GET", "/events?topic=a&topic=no%20pe", None, None, 400, "bad_topic"),
    ("GET", "/topics/events", None, None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "ctype", "status", "code"), CASES)
async def test_bad_request_is_answered_precisely(method, path, body, ctype, status, code):
    with trio.fail_after(10):
        async with open_broker_server() as server:
            watcher = await open_sse(server.url, "/topics/ok/events")
            await watcher.next_event()
            headers = {"Content-Type": ctype} if ctype else {}
            async with httpx.AsyncClient(base_url=server.url) as client:
                answer = await client.request(method, path, content=body, headers=headers)
                assert answer.status_code == status, answer.text
                assert answer.headers["content-type"] == "application/json"
                assert answer.json()["code"] == code
                assert answer.json()["error"]
                assert server.hub.statistics().published == 0
                # the broker keeps serving everyone else, on the same connection too
                good = await client.post("/topics/ok", content=b"fine")
                assert good.status_code == 202
            [event] = await watcher.events(1)
            assert event.data == "fine"
            await watcher.aclose()


async def test_oversized_bodies_get_413_and_publish_nothing():
    with trio.fail_after(10):
        async with open_broker_server(limits={"max_body_bytes": 1000}) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                big = await client.post("/topics/t", content=b"x" * 1001)
                assert big.status_code == 413
                assert big.json()["code"] == "payload_too_large"

                async def chunks():
                    for _ in range(20):
                        yield b"y" * 100

                chunked = await client.post("/topics/t", content=chunks())
                assert chunked.status_code == 413
                ok = await client.post("/topics/t", content=b"x" * 1000)
                assert ok.status_code == 202
            assert server.hub.statistics().published == 1


async def raw_exchange(url, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(data)
    answer = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        answer += chunk
    await stream.aclose()
    return answer


async def test_garbage_and_oversized_heads_are_answered_and_closed():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            garbage = await raw_exchange(server.url, b"\x00\x03\x01garbage\r\n\r\n")
            assert garbage.startswith(b"HTTP/1.1 400 ")
            # a TLS hello on a broker without a certificate: closed without an answer
            assert await raw_exchange(server.url, b"\x16\x03\x01\x00\x05hello") == b""
            assert b'"code":"bad_request"' in garbage
            huge = await raw_exchange(
                server.url, b"GET /x HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
            )
            assert huge.startswith(b"HTTP/1.1 431 ")
            no_length = await raw_exchange(
                server.url, b"POST /topics/t HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            assert no_length.startswith(b"HTTP/1.1 411 ")
            bad_id = await raw_exchange(
                server.url,
                b"GET /topics/t/events HTTP/1.1\r\nHost: a\r\nLast-Event-ID: "
                + b"x" * 2000
                + b"\r\n\r\n",
            )
            assert bad_id.startswith(b"HTTP/1.1 400 ")
            assert b"bad_event_id" in bad_id
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/topics/t", content=b"x")).status_code == 202


async def test_expect_100_continue_is_honoured():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            answer = await raw_exchange(
                server.url,
                b"POST /topics/t HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
                b"Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            )
            assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 ")
