"""A fault in the Redis follower ends that message's handling alone (issue 17, guard.py).

The message handler raises once; the guard counts it (``where="redis"``), the topic is
read from Redis instead, so the subscriber still gets that event, and the engine goes on
delivering later ones. Without the guard the exception went up through coredis's pubsub
reader into the engine's nursery and ended the process.
"""

from __future__ import annotations

import httpx
import trio

from broker.engines.redis import entries
from tests.redis.scenarios import start_redis_node
from tests.support.faults import fail_once, internal_errors, only, open_watcher


async def test_follower_fault_is_contained_and_the_event_read_instead(
    redis_server, key_prefix, monkeypatch
):
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            server = await start_redis_node(nursery, redis_server.url, key_prefix)
            watcher = await open_watcher(server)
            raised = fail_once(monkeypatch, entries, "parse_message")
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/topics/watch", content=b"one")).status_code == 202
                [event] = await watcher.events(1)
                assert event.data == "one"
                assert raised == [1]
                assert await internal_errors(server) == only("redis")
                assert (await client.post("/topics/watch", content=b"two")).status_code == 202
                [event] = await watcher.events(1)
                assert event.data == "two"
            assert server.store.statistics().state == "up"
            await watcher.aclose()
            server.request_shutdown()
