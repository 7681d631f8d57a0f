"""The Redis engine against one real ``redis-server``: 2-3 brokers in this process."""

from __future__ import annotations

import json
import os
import subprocess
import time

import coredis
import httpx
import jwt
import trio
from trio_websocket import open_websocket_url

from broker.engines.redis import ids
from tests.redis import scenarios
from tests.redis.conftest import (
    REDIS_SERVER,
    RedisServer,
    answers,
    free_port,
    needs_redis,
    wait_until,
)
from tests.redis.scenarios import collect, post, start_nodes, start_redis_node, started, until
from tests.support.servers import BrokerProcess, open_broker_server
from tests.support.sse_client import open_sse

pytestmark = needs_redis


async def test_publish_on_a_reaches_b_and_c_once_in_order(redis_server, key_prefix):
    await scenarios.fan_out(redis_server.url, key_prefix)


async def test_subscriber_moves_to_another_node_and_misses_nothing(redis_server, key_prefix):
    await scenarios.resume_elsewhere(redis_server.url, key_prefix)


async def test_batch_is_all_or_nothing(redis_server, key_prefix):
    await scenarios.batch_atomic(redis_server.url, key_prefix, clustered=False)


async def test_redis_killed_and_restarted_mid_stream(persistent_redis: RedisServer, key_prefix):
    await scenarios.outage(
        persistent_redis.url,
        key_prefix,
        kill=persistent_redis.kill,
        restart=persistent_redis.start,
    )


async def test_redis_restarted_empty_resets_in_band(redis_server: RedisServer, key_prefix):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            (a,) = await start_nodes(nursery, redis_server.url, key_prefix, 1)
            stream = await open_sse(a.url, "/topics/e/events")
            await started(stream)
            await post(a.url, "e", "before")
            [before] = await collect(stream, 1)
            await trio.to_thread.run_sync(redis_server.kill)
            await until(stream, "broker.degraded")
            await trio.to_thread.run_sync(redis_server.start)  # empty: no persistence
            reset, _ = await until(stream, "broker.reset")
            assert reset.json() == {
                "topic": "e",
                "reason": "unknown",
                "position": before.id,
                "requested": before.id,
            }
            assert reset.id == before.id  # the notice moves no one
            await until(stream, "broker.recovered")
            await post(a.url, "e", "after")
            assert [e.json() for e in await collect(stream, 1)] == ["after"]
            # an id from before the restart cannot be resumed exactly any more
            again = await open_sse(a.url, "/topics/e/events", {"Last-Event-ID": before.id})
            first = await started(again)
            assert first.event == "broker.reset"
            assert first.json()["reason"] in ("unknown", "evicted")
            assert [e.json() for e in await collect(again, 1)] == ["after"]
            for s in (stream, again):
                await s.aclose()
            nursery.cancel_scope.cancel()


async def test_ids_of_the_other_engine_reset_never_crash(redis_server, key_prefix):
    with trio.fail_after(20):
        async with open_broker_server() as memory, trio.open_nursery() as nursery:
            redis_node = await start_redis_node(nursery, redis_server.url, key_prefix)
            mesh_id = (await post(memory.url, "t", 1)).json()["id"]
            redis_id = (await post(redis_node.url, "t", 1)).json()["id"]
            for server, foreign in ((redis_node, mesh_id), (memory, redis_id)):
                for path in ("/topics/t/events", "/events?topic=t&topic=u"):
                    stream = await open_sse(server.url, path, {"Last-Event-ID": foreign})
                    assert stream.status == 200
                    first = await started(stream)
                    assert first.event == "broker.reset", first
                    assert first.json()["reason"] == "unparsable"
                    await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_retained_and_final_are_shared_by_every_node(redis_server, key_prefix):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, redis_server.url, key_prefix, 2)
            await post(a.url, "job", {"p": 0.5}, event="progress", retain=1)
            for n in range(3):
                await post(a.url, "job", n)
            late = await open_sse(b.url, "/topics/job/events")
            start = await started(late)
            [state] = await collect(late, 1)
            assert state.event == "progress"
            assert state.json() == {"p": 0.5}
            assert state.id == start.id  # retained state comes at the start position
            await post(b.url, "job", "done", final=1)
            [final] = await collect(late, 1)
            assert final.json() == "done"
            _end, _ = await until(late, "broker.end")
            assert await late.next_event() is None  # a single-topic stream ends
            await post(a.url, "job", "more", expect=409)
            async with httpx.AsyncClient(base_url=b.url) as client:
                answer = await client.get("/topics/job/events", headers={"Last-Event-ID": final.id})
                assert answer.status_code == 204  # stop reconnecting for good
            await late.aclose()
            nursery.cancel_scope.cancel()


async def test_last_n_and_resume_read_history_from_redis(redis_server, key_prefix):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, redis_server.url, key_prefix, 2)
            ids = [(await post(a.url, "h", n)).json()["id"] for n in range(20)]
            fresh = await open_sse(b.url, "/topics/h/events?last=5")  # b never followed h
            assert (await started(fresh)).json()["resumed"] is False
            got = await collect(fresh, 5)
            assert [e.json() for e in got] == list(range(15, 20))
            assert [e.id for e in got] == ids[15:]
            resumed = await open_sse(b.url, "/topics/h/events", {"Last-Event-ID": ids[3]})
            assert (await started(resumed)).event == "broker.start"
            assert [e.json() for e in await collect(resumed, 16)] == list(range(4, 20))
            for s in (fresh, resumed):
                await s.aclose()
            nursery.cancel_scope.cancel()


async def test_stats_show_the_engine(redis_server, key_prefix):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            (a,) = await start_nodes(nursery, redis_server.url, key_prefix, 1)
            async with httpx.AsyncClient(base_url=a.url) as client:
                stats = (await client.get("/stats")).json()
            assert stats["cluster"]["engine"] == "redis"
            assert stats["cluster"]["state"] == "up"
            nursery.cancel_scope.cancel()


async def test_new_streams_are_told_to_come_back_while_redis_is_away(redis_server, key_prefix):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            (a,) = await start_nodes(nursery, redis_server.url, key_prefix, 1)
            last = (await post(a.url, "d", 1)).json()["id"]
            await trio.to_thread.run_sync(redis_server.kill)
            await post(a.url, "d", 2, expect=503)
            refused = await open_sse(a.url, "/topics/d/events", {"Last-Event-ID": last})
            assert refused.status == 200  # a browser only reconnects after a 200
            notice = await refused.next_event()
            assert notice is not None
            assert notice.event == "broker.degraded"
            assert notice.id == last  # the browser keeps its position
            assert notice.retry is not None
            assert notice.retry >= 1000
            assert await refused.next_event() is None  # and comes back after retry:
            ws_url = a.url.replace("http://", "ws://") + "/topics/d/ws"
            async with httpx.AsyncClient() as client:
                answer = await client.get(
                    ws_url.replace("ws://", "http://"),
                    headers={
                        "Connection": "Upgrade",
                        "Upgrade": "websocket",
                        "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    },
                )
            assert answer.status_code == 503
            assert answer.headers["retry-after"]
            assert answer.json()["code"] == "store_unavailable"
            await refused.aclose()
            nursery.cancel_scope.cancel()


async def test_websocket_subscribe_command_follows_a_new_topic(redis_server, key_prefix):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, redis_server.url, key_prefix, 2)
            ws_url = b.url.replace("http://", "ws://") + "/ws"
            async with open_websocket_url(ws_url) as ws:
                assert json.loads(await ws.get_message())["event"] == "broker.start"
                await ws.send_message(json.dumps({"op": "subscribe", "topics": ["w"], "ref": 1}))
                ack = json.loads(await ws.get_message())
                assert ack["event"] == "broker.ack"
                store = b.store
                assert store is not None
                await scenarios.wait_for(lambda: "w" in store.caches and store.caches["w"].ready)
                await post(a.url, "w", "hello")
                message = json.loads(await ws.get_message())
                assert (message["topic"], message["data"]) == ("w", "hello")
                await ws.send_message(json.dumps({"op": "publish", "topic": "w", "data": 1}))
                answer = json.loads(await ws.get_message())
                assert answer["event"] == "broker.command_error"
                assert answer["data"]["code"] == "forbidden"  # [websocket] allow_publish is off
            await scenarios.wait_idle([a, b])
            nursery.cancel_scope.cancel()


def test_broker_run_stops_with_one_line_when_redis_is_unusable(tmp_path):
    closed_port = free_port()
    for url, expected in [
        (f"redis://127.0.0.1:{closed_port}/0", "cannot use Redis"),
        ("redis://127.0.0.1:99999/0", "bad port"),
        ("mysql://db", "unknown scheme"),
    ]:
        line = scenarios.refused_at_start(
            {
                "BROKER_CLUSTER_ENABLED": "true",
                "BROKER_CLUSTER_ENGINE": "redis",
                "BROKER_CLUSTER_REDIS_URL": url,
                "BROKER_CLUSTER_REDIS_TIMEOUT_SECONDS": "0.5",
            }
        )
        assert "[cluster] redis_url" in line
        assert expected in line


async def test_clearing_retained_and_forgetting_reach_every_node(redis_server, key_prefix):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, redis_server.url, key_prefix, 2)
            await post(a.url, "job", {"p": 1}, event="progress", retain=1)
            watching = await open_sse(b.url, "/topics/job/events")
            await started(watching)
            [state] = await collect(watching, 1)
            assert state.event == "progress"
            async with httpx.AsyncClient(base_url=a.url) as client:
                answer = await client.delete("/topics/job/retained")
            assert answer.json() == {"topic": "job", "cleared": 1}
            await scenarios.wait_for(lambda: not b.hub._topics["job"].retained)
            await post(a.url, "job", "last", final=1)
            [final] = await collect(watching, 1)
            assert final.json() == "last"
            async with httpx.AsyncClient(base_url=b.url) as client:
                answer = await client.delete("/topics/job")
            assert answer.json() == {"topic": "job", "forgotten": True}
            await post(a.url, "job", "reborn")  # no longer closed
            fresh = await open_sse(a.url, "/topics/job/events?last=10")
            await started(fresh)
            assert [e.json() for e in await collect(fresh, 1)] == ["reborn"]
            await watching.aclose()
            await fresh.aclose()
            nursery.cancel_scope.cancel()


async def test_sigterm_shuts_a_redis_node_down_gracefully(redis_server, key_prefix):
    env = {
        "BROKER_CLUSTER_ENABLED": "true",
        "BROKER_CLUSTER_ENGINE": "redis",
        "BROKER_CLUSTER_REDIS_URL": redis_server.url,
        "BROKER_CLUSTER_REDIS_KEY_PREFIX": key_prefix,
    }
    with BrokerProcess(env=env, args=["--config", os.devnull]) as broker:
        with trio.fail_after(20):
            stream = await open_sse(broker.url, "/topics/s/events")
            await started(stream)
            await post(broker.url, "s", 1)
            assert [e.json() for e in await collect(stream, 1)] == [1]
            assert await broker.astop() == 0
            shutdown, _ = await until(stream, "broker.shutdown")
            assert shutdown.json()["retry_ms"] > 0
            await stream.aclose()


async def test_lost_and_repeated_messages_never_lose_or_repeat_an_event(redis_server, key_prefix):
    """The message chain: an event is taken from a message only if it is the next entry."""
    key = f"{key_prefix}:{{m}}"
    with trio.fail_after(20):
        async with (
            trio.open_nursery() as nursery,
            coredis.Redis.from_url(redis_server.url, decode_responses=True) as redis,
        ):
            a, b = await start_nodes(nursery, redis_server.url, key_prefix, 2)
            stream = await open_sse(b.url, "/topics/m/events")
            await started(stream)
            await post(a.url, "m", "e0")
            assert [e.json() for e in await collect(stream, 1)] == ["e0"]
            [(e0_id, e0_fields)] = [(e.identifier, e.field_values) for e in await redis.xrange(key)]
            # e1 is stored but its message is lost: the next message does not chain
            await redis.xadd(key, {"f": "1", "t": "0", "e": "", "d": '"e1"'})
            await post(a.url, "m", "e2")
            assert [e.json() for e in await collect(stream, 2)] == ["e1", "e2"]
            # e0's message arrives again, late: it is not the next entry
            repeat = "\n".join(["0-0", e0_id, *(e0_fields[f] for f in ("f", "t", "e", "d"))])
            await redis.publish(key, repeat)
            await post(a.url, "m", "e3")
            assert [e.json() for e in await collect(stream, 1)] == ["e3"]
            assert b.store is not None
            assert b.store.delivered_from_messages >= 2  # e0 and e3 came from their messages
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_a_sentinel_url_finds_the_primary(redis_server, key_prefix, tmp_path):
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor primary 127.0.0.1 {redis_server.port} 1\n"
    )
    sentinel = subprocess.Popen(
        [REDIS_SERVER or "redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await trio.to_thread.run_sync(lambda: wait_until(lambda: answers(port), what="sentinel"))
        url = f"redis+sentinel://127.0.0.1:{port}/primary"
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                (a,) = await start_nodes(nursery, url, key_prefix, 1)
                (b,) = await start_nodes(nursery, redis_server.url, key_prefix, 1)
                stream = await open_sse(b.url, "/topics/s/events")
                await started(stream)
                await post(a.url, "s", "through sentinel")
                assert [e.json() for e in await collect(stream, 1)] == ["through sentinel"]
                await stream.aclose()
                nursery.cancel_scope.cancel()
    finally:
        sentinel.kill()
        sentinel.wait(10)


async def test_an_id_from_the_future_resets_and_replays_nothing(redis_server, key_prefix):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, redis_server.url, key_prefix, 2)
            for n in range(3):
                await post(a.url, "f", n)
            future = ids.token(ids.tag("f"), ids.pack(f"{int(time.time() * 1000) + 10**9}-0"))
            stream = await open_sse(b.url, "/topics/f/events", {"Last-Event-ID": future})
            first = await started(stream)
            assert first.event == "broker.reset"
            assert first.json()["reason"] == "unknown"
            await post(a.url, "f", "new")
            assert [e.json() for e in await collect(stream, 1)] == ["new"]  # not 0, 1, 2
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_hot_routes_on_hypercorn_connections_use_the_engine_too(redis_server, key_prefix):
    """A connection hypercorn serves (here: after a page) publishes and streams alike."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(nursery, redis_server.url, key_prefix, 2)
            watch = await open_sse(b.url, "/topics/k/events")
            await started(watch)
            conn = await trio.open_tcp_stream("127.0.0.1", a.port)
            received = b""
            await conn.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            while b'"ok"}' not in received:
                received += await conn.receive_some(4096)
            await conn.send_all(
                b"POST /topics/k HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 7\r\n\r\n"asgi!"'
            )
            received = b""
            while b'"topic":"k"}' not in received:
                received += await conn.receive_some(4096)
            assert received.startswith(b"HTTP/1.1 202")
            [event] = await collect(watch, 1)
            assert event.json() == "asgi!"
            assert event.id.encode() in received  # the 202 names the stream entry
            await conn.send_all(b"GET /topics/k/events?last=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b'data: "asgi!"' not in received:
                received += await conn.receive_some(4096)
            assert b"broker.start" in received
            await conn.aclose()
            await watch.aclose()
            nursery.cancel_scope.cancel()


async def test_publishes_work_within_1_s_of_redis_answering_again(persistent_redis, key_prefix):
    """Issue 20: after Redis came back, 503 went on for 1-7 s (the reconnect backoff had grown)."""
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            (a,) = await start_nodes(
                nursery,
                persistent_redis.url,
                key_prefix,
                1,
                cluster={"backoff_max_seconds": 10.0},  # the default, not the tests' 0.3
            )
            await post(a.url, "w", "before")
            await trio.to_thread.run_sync(persistent_redis.kill)
            await post(a.url, "w", "lost", expect=503)
            # an outage of some seconds: an uncapped backoff has grown to seconds by then
            await trio.sleep(5)
            await trio.to_thread.run_sync(persistent_redis.start)  # returns once it answers
            back = trio.current_time()
            async with httpx.AsyncClient(base_url=a.url) as client:
                while (await client.post("/topics/w", json="after")).status_code != 202:
                    await trio.sleep(0.02)
            waited = trio.current_time() - back
            print(f"\npublishes accepted {waited:.2f} s after Redis answered again")
            assert waited < 1.0
            nursery.cancel_scope.cancel()


async def test_clearing_and_forgetting_need_a_token_on_the_redis_engine(redis_server, key_prefix):
    """Issue 17: DELETE needed no token; on a store it wipes the topic for every node."""
    secret = "a-shared-secret-that-is-long-enough-32"

    def bearer(claims):
        signed = jwt.encode({"exp": time.time() + 600, **claims}, secret, algorithm="HS256")
        return {"Authorization": f"Bearer {signed}"}

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            node = await start_redis_node(
                nursery, redis_server.url, key_prefix, auth={"secret": secret}
            )
            async with httpx.AsyncClient(base_url=node.url) as client:
                owner, other = bearer({"publish": ["job"]}), bearer({"publish": ["x"]})
                published = await client.post("/topics/job?retain=1", json=1, headers=owner)
                assert published.status_code == 202
                for path in ("/topics/job/retained", "/topics/job"):
                    assert (await client.delete(path)).status_code == 401
                    assert (await client.delete(path, headers=other)).status_code == 403
                cleared = await client.delete("/topics/job/retained", headers=owner)
                assert cleared.json() == {"topic": "job", "cleared": 1}
                forgotten = await client.delete("/topics/job", headers=bearer({"admin": True}))
                assert forgotten.json() == {"topic": "job", "forgotten": True}
            nursery.cancel_scope.cancel()
