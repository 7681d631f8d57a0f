"""A bad byte in any header, upgrade headers included, is a 400 JSON error (issue 17).

``Connection: Upgrade, a\\xd0`` once made wsproto raise ``UnicodeDecodeError`` and ended the
process. Every byte 0x80-0xff, NUL, DEL and a lone CR, in each field wsproto or the broker
reads as ASCII, on a WebSocket upgrade and on a publish: 400 ``{"error","code"}``, nothing
published, no internal error counted, and a bystander subscriber keeps receiving.
"""

from __future__ import annotations

import json

import pytest
import trio

from tests.support.faults import bystander_keeps_receiving, internal_errors, open_watcher
from tests.support.servers import open_broker_server

BAD_BYTES = [*range(0x80, 0x100), 0x00, 0x7F, 0x0D]

UPGRADE = {
    "Host": b"x",
    "Upgrade": b"websocket",
    "Connection": b"Upgrade",
    "Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": b"13",
}


def head(first_line: bytes, fields: dict[str, bytes]) -> bytes:
    return (
        first_line
        + b"\r\n"
        + b"".join(k.encode() + b": " + v + b"\r\n" for k, v in fields.items())
        + b"\r\n"
    )


async def exchange(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(data)
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
        return answer
    finally:
        await stream.aclose()


def assert_400_json(answer: bytes, case: object) -> None:
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request", (case, answer)
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["code"] == "bad_request", case
    assert body["error"], case


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("Connection", b"Upgrade, a"),
        ("Sec-WebSocket-Protocol", b"broker.json, a"),
        ("Sec-WebSocket-Extensions", b"permessage-deflate; a"),
        ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ="),
        ("Origin", b"https://a"),
        ("Host", b"a"),
    ],
)
async def test_every_bad_byte_in_an_upgrade_field_is_a_400(name, prefix):
    with trio.fail_after(20):
        async with open_broker_server() as server:
            watcher = await open_watcher(server)
            for byte in BAD_BYTES:
                fields = {**UPGRADE, name: prefix + bytes([byte]) + b"z"}
                answer = await exchange(server.port, head(b"GET /topics/w/ws HTTP/1.1", fields))
                assert_400_json(answer, (name, hex(byte)))
                publish = {"Host": b"x", "Content-Length": b"1", name: prefix + bytes([byte])}
                answer = await exchange(
                    server.port, head(b"POST /topics/w HTTP/1.1", publish) + b"x"
                )
                assert_400_json(answer, ("publish", name, hex(byte)))
            assert server.hub.statistics().published == 0
            assert server.hub.statistics().subscribers == 1
            assert sum((await internal_errors(server)).values()) == 0
            await bystander_keeps_receiving(server, watcher, 1)
            await watcher.aclose()


@pytest.mark.parametrize("host", [b"xn--zz", b"xn--", b"a.xn--99"])
async def test_a_host_that_is_not_idna_is_a_400_on_upgrade(host):
    """ASCII, but wsproto decodes Host as IDNA: ``xn--zz`` raised ``UnicodeError``."""
    with trio.fail_after(10):
        async with open_broker_server() as server:
            answer = await exchange(
                server.port, head(b"GET /topics/w/ws HTTP/1.1", {**UPGRADE, "Host": host})
            )
            assert_400_json(answer, host)
            assert sum((await internal_errors(server)).values()) == 0


async def test_a_bad_upgrade_field_on_a_handed_off_connection_closes_it():
    """The second request of a kept-alive hypercorn connection: closed, not a fault."""
    with trio.fail_after(10):
        async with open_broker_server() as server:
            watcher = await open_watcher(server)
            first = head(b"GET /healthz HTTP/1.1", {"Host": b"x"})
            second = head(b"GET /stats HTTP/1.1", {**UPGRADE, "Connection": b"Upgrade, a\xd0"})
            answer = await exchange(server.port, first + second)
            assert answer.startswith(b"HTTP/1.1 200")
            assert answer.count(b"HTTP/1.1") == 1
            assert sum((await internal_errors(server)).values()) == 0
            await bystander_keeps_receiving(server, watcher, 1)
            await watcher.aclose()
