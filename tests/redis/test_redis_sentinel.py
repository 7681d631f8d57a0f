"""Sentinel failover under load: the brokers follow the new primary, nothing is lost."""

from __future__ import annotations

import httpx
import trio

from tests.redis.conftest import SentinelGroup, needs_redis
from tests.redis.scenarios import collect, start_nodes, started, until
from tests.support.sse_client import open_sse

pytestmark = needs_redis


async def test_primary_hangs_sentinel_fails_over_and_every_accepted_event_arrives_once(
    sentinel_group: SentinelGroup, key_prefix
):
    old_primary = sentinel_group.primary.port
    # About 4 s here: the primary is marked down after 0.5 s, promoted about 2 s later; a
    # node that only listens must notice a hung primary by itself (not 15 s later).
    with trio.fail_after(12):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, sentinel_group.url, key_prefix, 2)
            on_a = await open_sse(a.url, "/topics/s/events")
            on_b = await open_sse(b.url, "/topics/s/events")
            for stream in (on_a, on_b):
                await started(stream)
            accepted: list[int] = []
            refused = 0
            failed_over = trio.Event()
            async with httpx.AsyncClient(base_url=a.url) as client:

                async def publisher() -> None:
                    """Publish 0, 1, 2 … until 20 were accepted after the failover."""
                    nonlocal refused
                    n, after = 0, 0
                    while after < 20:
                        answer = await client.post("/topics/s", json=n)
                        if answer.status_code == 202:
                            accepted.append(n)
                            after += failed_over.is_set()
                        else:
                            assert answer.status_code == 503, answer.text
                            assert answer.json()["code"] == "store_unavailable"
                            refused += 1
                        n += 1
                        await trio.sleep(0.01)

                async with trio.open_nursery() as publishing:
                    publishing.start_soon(publisher)
                    while len(accepted) < 20:
                        await trio.sleep(0.01)
                    # the primary hangs (its sockets stay open): only timeouts tell
                    await trio.to_thread.run_sync(sentinel_group.primary.pause)
                    while await trio.to_thread.run_sync(sentinel_group.primary_port) == old_primary:
                        await trio.sleep(0.05)
                    failed_over.set()
            assert refused >= 1  # the gap was answered 503, not hidden
            assert accepted == sorted(accepted)
            for stream in (on_a, on_b):
                _recovered, before = await until(stream, "broker.recovered")
                rest = await collect(stream, len(accepted) - len(before))
                got = [e.json() for e in before + rest]
                assert got == accepted  # every accepted event, once, in order
                assert len({e.id for e in before + rest}) == len(accepted)
            for server in (a, b):
                assert server.store is not None
                assert server.store.healthy
                assert server.store.reconnects >= 1
            for stream in (on_a, on_b):
                await stream.aclose()
            nursery.cancel_scope.cancel()
