"""The Redis engine suite, written once and run against one Redis and a Redis Cluster.

Each scenario takes the Redis URL and a key prefix of its own; the test modules choose the
Redis. Brokers run in-process on ephemeral ports (``serve``), like ``tests/cluster``.
Every wait is for a condition, under ``trio.fail_after``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from broker.server import RunningServer, serve
from tests.support.servers import TEST_SETTINGS
from tests.support.sse_client import SseEvent, SseStream, open_sse
from tests.support.waiting import wait_for, wait_for_async


def redis_tables(url: str, prefix: str, **tables: Any) -> dict[str, Any]:
    cluster = {
        "enabled": True,
        "engine": "redis",
        "redis_url": url,
        "redis_key_prefix": prefix,
        "redis_timeout_seconds": 1.0,
        "redis_idle_topic_seconds": 0.3,
        "backoff_max_seconds": 0.3,
        **tables.pop("cluster", {}),
    }
    return {"cluster": cluster, **tables}


async def start_redis_node(
    nursery: trio.Nursery, url: str, prefix: str, **tables: Any
) -> RunningServer:
    """One broker on the Redis engine; stop it with ``server.request_shutdown()``."""
    settings = TEST_SETTINGS.replace(**redis_tables(url, prefix, **tables))
    server: RunningServer = await nursery.start(serve, settings)
    return server


async def start_nodes(nursery: trio.Nursery, url: str, prefix: str, count: int, **tables: Any):
    return [await start_redis_node(nursery, url, prefix, **tables) for _ in range(count)]


def refused_at_start(env: dict[str, str]) -> str:
    """Run ``broker run`` with these ``BROKER_*`` settings; it must stop at once with one
    ``broker:`` line (exit code 2, no traceback). Returns that line."""
    done = subprocess.run(
        [sys.executable, "-m", "broker", "run", "--port", "0", "--config", os.devnull],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("broker:")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


async def post(
    url: str, topic: str, data: Any, *, expect: int = 202, **params: Any
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.post(f"/topics/{topic}", json=data, params=params)
    assert answer.status_code == expect, answer.text
    return answer


async def post_batch(url: str, events: list[dict[str, Any]]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        return await client.post("/publish", json={"events": events})


async def started(stream: SseStream) -> SseEvent:
    event = await stream.next_event()
    assert event is not None
    assert event.event in ("broker.start", "broker.reset"), event
    return event


async def collect(stream: SseStream, count: int) -> list[SseEvent]:
    """The next ``count`` data events (``broker.*`` notices skipped)."""
    return await stream.events(count)


async def until(stream: SseStream, event_type: str) -> tuple[SseEvent, list[SseEvent]]:
    """Read up to the first ``event_type`` notice; return it and the data events before."""
    before = []
    while True:
        event = await stream.next_event()
        assert event is not None, f"stream ended before {event_type}"
        if event.event == event_type:
            return event, before
        if not (event.event or "").startswith("broker."):
            before.append(event)


async def wait_idle(servers: list[RunningServer]) -> None:
    """Every subscription is gone and every node stopped following its topics."""
    await wait_for(
        lambda: all(
            s.hub.statistics().subscriptions == 0 and s.store is not None and not s.store.caches
            for s in servers
        )
    )


# -- 1. publish on A, every subscriber on B and C receives once, in order ---------------


async def fan_out(url: str, prefix: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_nodes(nursery, url, prefix, 3)
            on_b = await open_sse(b.url, "/topics/t/events")
            on_c = await open_sse(c.url, "/topics/t/events")
            both = await open_sse(b.url, "/events?topic=t&topic=u")
            for stream in (on_b, on_c, both):
                await started(stream)
            ws_url = c.url.replace("http://", "ws://") + "/topics/t/ws"
            async with open_websocket_url(ws_url) as ws:
                assert json.loads(await ws.get_message())["event"] == "broker.start"
                for n in range(40):
                    await post(a.url, "t", n)
                await post(b.url, "u", "u-from-b")
                for n in range(40, 60):  # from every node: one order, the stream's
                    await post((a, b, c)[n % 3].url, "t", n)
                got_b = await collect(on_b, 60)
                got_c = await collect(on_c, 60)
                for got in (got_b, got_c):
                    assert [e.json() for e in got] == list(range(60))
                    assert len({e.id for e in got}) == 60
                # one stream, one order, the same ids on every node
                assert [e.id for e in got_b] == [e.id for e in got_c]
                ws_events = [json.loads(await ws.get_message()) for _ in range(60)]
                assert [m["data"] for m in ws_events] == list(range(60))
                assert [m["id"] for m in ws_events] == [e.id for e in got_c]
            multi = await collect(both, 61)
            assert sorted(e.data for e in multi if e.data.startswith('"')) == ['"u-from-b"']
            assert [e.json() for e in multi if not e.data.startswith('"')] == list(range(60))
            assert len({e.id for e in multi}) == 61
            for stream in (on_b, on_c, both):
                await stream.aclose()
            await wait_idle([a, b, c])
            nursery.cancel_scope.cancel()


# -- 2. a subscriber on A reconnects to B with its last id and misses nothing -----------


async def resume_elsewhere(url: str, prefix: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, url, prefix, 2)
            single = await open_sse(a.url, "/topics/x/events")
            multi = await open_sse(a.url, "/events?topic=x&topic=y")
            await started(single)
            await started(multi)
            for n in range(10):
                await post((a, b)[n % 2].url, "xy"[n % 2], n)
            seen_multi = await collect(multi, 6)
            seen_single = await collect(single, 3)
            await multi.aclose()
            await single.aclose()
            for n in range(10, 20):
                await post((a, b)[n % 2].url, "xy"[n % 2], n)
            moved = await open_sse(
                b.url, "/events?topic=x&topic=y", {"Last-Event-ID": seen_multi[-1].id}
            )
            start = await started(moved)
            assert start.event == "broker.start", start.data
            assert start.json()["resumed"] is True
            rest = await collect(moved, 14)
            numbers = [e.json() for e in seen_multi + rest]
            assert sorted(numbers) == list(range(20))  # nothing lost, nothing twice
            assert [n for n in numbers if n % 2 == 0] == list(range(0, 20, 2))  # x in order
            moved_single = await open_sse(
                b.url, "/topics/x/events", {"Last-Event-ID": seen_single[-1].id}
            )
            assert (await started(moved_single)).event == "broker.start"
            assert [e.json() for e in await collect(moved_single, 7)] == list(range(6, 20, 2))
            # an id from the single-topic stream resumes a multi-topic one on that topic
            wider = await open_sse(
                b.url, "/events?topic=x&topic=y", {"Last-Event-ID": seen_single[-1].id}
            )
            assert (await started(wider)).event == "broker.start"
            assert [e.json() for e in await collect(wider, 7)] == list(range(6, 20, 2))
            for stream in (moved, moved_single, wider):
                await stream.aclose()
            await wait_idle([a, b])
            nursery.cancel_scope.cancel()


# -- 4. a batch is all or nothing ---------------------------------------------------------


async def stored(server: RunningServer, topic: str, last: int = 100) -> list[Any]:
    """What the topic's history holds, read through a fresh ``last=N`` stream."""
    stream = await open_sse(server.url, f"/topics/{topic}/events?last={last}")
    await started(stream)
    out = []
    while True:
        with trio.move_on_after(0.3):  # history arrives at once; then the stream is quiet
            event = await stream.next_event()
            if event is None:  # a closed topic's stream ends after its final event
                break
            if not (event.event or "").startswith("broker."):
                out.append(event.json())
            continue
        break
    await stream.aclose()
    return out


async def batch_atomic(url: str, prefix: str, *, clustered: bool) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, url, prefix, 2)
            watch = await open_sse(b.url, "/topics/job/events")
            await started(watch)
            answer = await post_batch(a.url, [{"topic": "job", "data": n} for n in range(5)])
            assert answer.status_code == 202, answer.text
            ids = answer.json()["ids"]
            assert [e.id for e in await collect(watch, 5)] == ids
            # refused before anything is stored: a bad item
            answer = await post_batch(
                a.url, [{"topic": "job", "data": 5}, {"topic": "bad topic!", "data": 6}]
            )
            assert answer.status_code == 400
            await post(a.url, "done", "bye", final=1)
            await post(a.url, "done", "again", expect=409)
            if clustered:
                answer = await post_batch(
                    a.url, [{"topic": "job", "data": 5}, {"topic": "other", "data": 6}]
                )
                assert answer.status_code == 400
                assert answer.json()["code"] == "batch_spans_slots"
                answer = await post_batch(a.url, [{"topic": "done", "data": 7}] * 3)
                assert answer.status_code == 409
            else:
                # a closed topic anywhere in the batch: nothing of it is stored
                answer = await post_batch(
                    a.url, [{"topic": "job", "data": 5}, {"topic": "done", "data": 6}]
                )
                assert answer.status_code == 409, answer.text
                answer = await post_batch(
                    a.url, [{"topic": "job", "data": 5}, {"topic": "other", "data": 6}]
                )
                assert answer.status_code == 202
            assert await stored(b, "done") == ["bye"]
            expected = list(range(6)) if not clustered else list(range(5))
            assert await stored(b, "job") == expected
            await watch.aclose()
            nursery.cancel_scope.cancel()


# -- 3. Redis killed and restarted mid-stream --------------------------------------------


async def outage(
    url: str, prefix: str, *, kill: Callable[[], None], restart: Callable[[], None]
) -> None:
    """Publishes during the outage get 503; nothing accepted is lost; subscribers recover.

    ``restart`` must bring Redis back with what it had acknowledged (AOF, fsync always).
    """
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, url, prefix, 2, stream={"heartbeat_seconds": 0.2})
            on_b = await open_sse(b.url, "/topics/o/events")
            multi = await open_sse(b.url, "/events?topic=o&topic=p")
            await started(on_b)
            await started(multi)
            accepted: list[int] = []
            refused = 0
            async with httpx.AsyncClient(base_url=a.url) as client:

                async def publish(n: int) -> bool:
                    nonlocal refused
                    answer = await client.post("/topics/o", json=n)
                    if answer.status_code == 202:
                        accepted.append(n)
                        return True
                    assert answer.status_code == 503, answer.text
                    assert int(answer.headers["retry-after"]) >= 1
                    assert answer.json()["code"] == "store_unavailable"
                    refused += 1
                    return False

                for n in range(10):
                    assert await publish(n)
                assert [e.json() for e in await collect(on_b, 10)] == list(range(10))
                await trio.to_thread.run_sync(kill)
                n = 10
                while await publish(n):  # until the engine notices
                    n += 1
                _degraded, before = await until(on_b, "broker.degraded")
                assert [e.json() for e in before] == accepted[10:]
                for m in range(n + 1, n + 6):
                    assert not await publish(m)  # refused at once while degraded
                n += 5
                # the stream stays up: heartbeats keep coming while Redis is away
                heard = len(on_b.raw)
                await wait_for_async(lambda: _heard_heartbeat(on_b, heard))
                await trio.to_thread.run_sync(restart)
                n += 1
                with trio.fail_after(20):
                    while not await publish(n):
                        await trio.sleep(0.05)
                        n += 1
                for m in range(n + 1, n + 10):
                    assert await publish(m)
                assert refused >= 6
            _recovered, caught_up = await until(on_b, "broker.recovered")
            rest = caught_up + await collect(
                on_b, len(accepted) - 10 - len(before) - len(caught_up)
            )
            received = [e.json() for e in before + rest]
            assert received == accepted[10:]  # nothing accepted lost, nothing twice, in order
            multi_got = await collect(multi, len(accepted))
            assert [e.json() for e in multi_got] == accepted
            assert b.store is not None
            assert b.store.healthy
            for stream in (on_b, multi):
                await stream.aclose()
            nursery.cancel_scope.cancel()


async def _heard_heartbeat(stream: SseStream, since: int) -> bool:
    with trio.move_on_after(0.5):
        while b":\n" not in bytes(stream.raw[since:]):
            if not await stream._fill():
                return False
    return b":\n" in bytes(stream.raw[since:])
