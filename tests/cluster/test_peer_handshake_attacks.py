"""The peer handshake against a stranger without the secret, over real sockets (issue 17)."""

import time

import httpx
import jwt
import trio

from broker.cluster import frames
from tests.support.peers import event, frames_until_closed, hello, next_frame, peer_endpoint
from tests.support.servers import start_node, wait_linked
from tests.support.sse_client import open_sse

JWT_SECRET = "a-shared-secret-that-is-long-enough-32"
AUTH = {"secret": JWT_SECRET, "anonymous_subscribe": ("public/**",)}
FAST = {"handshake_timeout_seconds": 0.5}


def bearer(claims):
    token = jwt.encode({"exp": time.time() + 600, **claims}, JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_reflecting_the_nodes_own_mac_does_not_link(caplog):
    """The reflection of issue 17, step by step: it no longer links or injects events.

    Link 1: read the node's nonce N1. Link 2: send hello with N1; the old node answered
    with its MAC before checking ours. Link 1: hello with nonce ``N2 + name[:-1]`` and node
    ``name[-1]``, replay that MAC, then an ``ev`` frame for a JWT-private topic.
    """
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "node-a", [], auth=AUTH)
            b = await start_node(nursery, "node-b", [a.cluster.addr], auth=AUTH)
            await wait_linked([a, b])
            reader = await open_sse(
                a.url, "/topics/private/jobs/events", bearer({"subscribe": ["private/**"]})
            )
            assert reader.status == 200
            rejected = a.cluster.statistics().rejected_links

            link1 = await trio.open_tcp_stream(*peer_endpoint(a))
            decoder1 = frames.FrameDecoder()
            first = await next_frame(link1, decoder1)
            assert first["t"] == "hello"
            n1, name = first["nonce"], first["node"]

            link2 = await trio.open_tcp_stream(*peer_endpoint(a))
            # hello with N1, then a made-up MAC so that the node decides (and closes) now
            await link2.send_all(hello("evil", n1) + frames.encode({"t": "auth", "mac": bytes(32)}))
            answered = await frames_until_closed(link2)
            # The node said hello and nothing else: no MAC for a stranger to reflect.
            assert [f["t"] for f in answered] == ["hello"]
            n2 = answered[0]["nonce"]
            stolen = next((f["mac"] for f in answered if f["t"] == "auth"), bytes(32))

            await link1.send_all(
                hello(name[-1], n2 + name[:-1].encode())
                + frames.encode({"t": "auth", "mac": stolen})
                + event("private/jobs", "injected")
            )
            assert [f["t"] for f in await frames_until_closed(link1, decoder1)] == []

            # The same with a nonce of the right length: refused as well.
            link3 = await trio.open_tcp_stream(*peer_endpoint(a))
            await link3.send_all(
                hello(name, n2)
                + frames.encode({"t": "auth", "mac": stolen})
                + event("private/jobs", "injected")
            )
            assert [f["t"] for f in await frames_until_closed(link3)] == ["hello"]

            assert set(a.cluster.links) == {"node-b"}
            assert a.cluster.statistics().rejected_links >= rejected + 3
            assert "timed out" not in caplog.text
            linked = [r.getMessage() for r in caplog.records if "linked to" in r.getMessage()]
            assert all(" node-b at " in line or " node-a at " in line for line in linked), linked
            assert "failed authentication" in caplog.text
            assert "nonce of exactly 32 bytes" in caplog.text

            # The subscriber's first event is the real one: nothing injected reached it.
            async with httpx.AsyncClient(base_url=a.url) as client:
                response = await client.post(
                    "/topics/private/jobs",
                    json="real",
                    headers=bearer({"publish": ["private/**"]}),
                )
                assert response.status_code == 202
            assert (await reader.events(1))[0].json() == "real"
            assert a.hub.replicated_in == 0
            await reader.aclose()
            nursery.cancel_scope.cancel()


async def test_a_peer_that_never_finishes_the_handshake_is_dropped(caplog):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster=FAST)
            silent = await trio.open_tcp_stream(*peer_endpoint(a))
            stalled = await trio.open_tcp_stream(*peer_endpoint(a))
            await stalled.send_all(hello("slow", b"n" * 32))
            started = trio.current_time()
            with trio.fail_after(3):
                assert [f["t"] for f in await frames_until_closed(silent)] == ["hello"]
                assert [f["t"] for f in await frames_until_closed(stalled)] == ["hello"]
            assert trio.current_time() - started < 2
            assert caplog.text.count("handshake timed out") == 2
            assert a.cluster.links == {}
            nursery.cancel_scope.cancel()


async def test_frames_before_authentication_are_small(caplog):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster=FAST)
            big = await trio.open_tcp_stream(*peer_endpoint(a))
            # 5000 bytes would pass the 4 MiB limit of an authenticated link.
            await big.send_all(frames.PREFIX.pack(5000) + b"\x80" * 100)
            with trio.fail_after(0.4):  # refused at once, not at the handshake timeout
                await frames_until_closed(big)
            assert "over 4096" in caplog.text
            nursery.cancel_scope.cancel()
