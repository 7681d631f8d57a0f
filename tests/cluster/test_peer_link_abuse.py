"""Garbage, a wrong secret or an oversized frame on the peer port close that link only."""

import httpx
import msgpack
import trio

from broker.cluster import frames
from broker.cluster.link import Hello, LinkBroken, handshake
from tests.support.servers import start_node, wait_linked
from tests.support.sse_client import open_sse


async def read_until_closed(stream):
    received = b""
    with trio.fail_after(5):
        try:
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass
    return received


def peer_endpoint(server):
    host, _, port = server.cluster.addr.rpartition(":")
    return host, int(port)


async def test_bad_peers_are_cut_off_and_the_node_keeps_serving(caplog):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [])
            b = await start_node(nursery, "b", [a.cluster.addr])
            await wait_linked([a, b])
            stream_on_b = await open_sse(b.url, "/topics/t/events")
            await stream_on_b.next_event()

            # 1. garbage bytes
            garbage = await trio.open_tcp_stream(*peer_endpoint(a))
            await garbage.send_all(b"GET / HTTP/1.1\r\n\r\n" + b"\xff" * 100)
            await read_until_closed(garbage)

            # 2. a well-formed hello with the wrong secret
            wrong = await trio.open_tcp_stream(*peer_endpoint(a))
            try:
                await handshake(
                    wrong,
                    frames.FrameDecoder(),
                    Hello("evil", "zzzzzz", "x:1"),
                    b"wrong secret",
                    dialer=True,
                    timeout=5,
                )
            except LinkBroken:
                pass
            else:
                raise AssertionError("a wrong secret was accepted")
            await read_until_closed(wrong)

            # 3. the right secret, then a frame over the size limit
            big = await trio.open_tcp_stream(*peer_endpoint(a))
            await handshake(
                big,
                frames.FrameDecoder(),
                Hello("big", "yyyyyy", "x:2"),
                b"test-secret",
                dialer=True,
                timeout=5,
            )
            await big.send_all(frames.PREFIX.pack(100 * 1024 * 1024) + b"x" * 1000)
            await read_until_closed(big)

            # 4. the right secret, then a frame that is msgpack but no peer frame
            odd = await trio.open_tcp_stream(*peer_endpoint(a))
            await handshake(
                odd,
                frames.FrameDecoder(),
                Hello("odd", "xxxxxx", "x:3"),
                b"test-secret",
                dialer=True,
                timeout=5,
            )
            body = msgpack.packb({"t": "ev", "o": "q"})
            await odd.send_all(frames.PREFIX.pack(len(body)) + body)
            await read_until_closed(odd)

            stats = a.cluster.statistics()
            assert stats.rejected_links >= 2
            assert "failed authentication" in caplog.text
            assert "garbage" in caplog.text  # during or after the handshake: both close it
            # the real peer link is untouched and replication still works
            with trio.fail_after(5):
                while set(a.cluster.links) != {"b"}:
                    await trio.sleep(0.01)
            async with httpx.AsyncClient(base_url=a.url) as client:
                await client.post("/topics/t", json="after the abuse")
            assert (await stream_on_b.events(1))[0].json() == "after the abuse"
            await stream_on_b.aclose()
            nursery.cancel_scope.cancel()


async def test_peer_secret_is_not_accepted_on_the_public_port():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [])
            public = await trio.open_tcp_stream("127.0.0.1", a.port)
            try:
                await handshake(
                    public,
                    frames.FrameDecoder(),
                    Hello("x", "wwwwww", "x:4"),
                    b"test-secret",
                    dialer=True,
                    timeout=3,
                )
            except LinkBroken:
                pass
            else:
                raise AssertionError("the public port spoke the peer protocol")
            assert a.cluster.links == {}
            nursery.cancel_scope.cancel()
