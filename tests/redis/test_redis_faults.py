"""A fault in the Redis follower ends that message's handling alone (issue 17, guard.py).

The message handler raises once; the guard counts it (``where="redis"``), the topic is
read from Redis instead, so the subscriber still gets that event, and the engine goes on
delivering later ones. Without the guard the exception went up through coredis's pubsub
reader into the engine's nursery and ended the process.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from broker.engines.redis import entries
from tests.redis.scenarios import start_redis_node
from tests.support.faults import fail_once, internal_errors, only, open_watcher
from tests.support.sse_client import open_sse
from tests.support.waiting import wait_for


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


async def test_a_topic_dropped_while_reconnecting_does_not_end_the_node(redis_server, key_prefix):
    """Found by the Redis chaos test: after an outage the session lists the tracked topics,
    subscribes to their channels, then reads them; a topic whose last subscriber left was
    dropped by the idle sweep during that subscribe, and ``self.caches[t]`` raised
    ``KeyError`` out of the supervisor, ending the engine and the node with it."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await start_redis_node(
                nursery, redis_server.url, key_prefix, stream={"heartbeat_seconds": 0.1}
            )
            engine = server.store
            assert engine is not None
            kept = await open_sse(server.url, "/topics/kept/events")
            leaving = await open_sse(server.url, "/topics/leaving/events")
            for stream in (kept, leaving):
                assert (await stream.next_event()).event == "broker.start"
            await trio.to_thread.run_sync(redis_server.kill)
            await wait_for(lambda: not engine.healthy)
            real_factory = engine._pubsub_factory

            def factory() -> Any:
                make = real_factory()

                def made(**kwargs: Any) -> Any:
                    pubsub = make(**kwargs)
                    subscribe = pubsub.subscribe

                    async def subscribe_while_the_last_subscriber_leaves(**channels: Any) -> Any:
                        result = await subscribe(**channels)
                        if "leaving" in engine.caches:  # the first session after the outage
                            await leaving.aclose()
                            await wait_for(lambda: "leaving" not in engine.caches)  # the sweep
                        return result

                    pubsub.subscribe = subscribe_while_the_last_subscriber_leaves
                    return pubsub

                return made

            engine._pubsub_factory = factory  # type: ignore[method-assign]
            await trio.to_thread.run_sync(redis_server.start)
            await wait_for(lambda: engine.healthy)
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/topics/kept", content=b"after")).status_code == 202
            assert [e.data for e in await kept.events(1)] == ["after"]
            await kept.aclose()
            server.request_shutdown()
