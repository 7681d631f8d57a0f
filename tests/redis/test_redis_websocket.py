"""WebSocket ``publish`` commands on the Redis engine: stored, acknowledged in order, 503s."""

from __future__ import annotations

import json
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.redis.conftest import RedisServer, needs_redis
from tests.redis.scenarios import collect, start_nodes, started, until
from tests.support.sse_client import open_sse

pytestmark = needs_redis

ANSWERS = ("broker.ack", "broker.command_error")


async def answer(ws: WebSocketConnection) -> dict[str, Any]:
    """The next command answer (notices such as ``broker.degraded`` skipped)."""
    while True:
        message = json.loads(await ws.get_message())
        if message["event"] in ANSWERS:
            return message


async def publish(ws: WebSocketConnection, ref: Any, data: Any) -> None:
    await ws.send_message(json.dumps({"op": "publish", "topic": "w", "data": data, "ref": ref}))


async def test_ws_publish_is_stored_acked_in_order_and_503_while_redis_is_away(
    persistent_redis: RedisServer, key_prefix
):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(
                nursery, persistent_redis.url, key_prefix, 2, websocket={"allow_publish": True}
            )
            on_b = await open_sse(b.url, "/topics/w/events")
            await started(on_b)
            ws_url = a.url.replace("http://", "ws://") + "/ws"
            async with open_websocket_url(ws_url) as ws:
                assert json.loads(await ws.get_message())["event"] == "broker.start"
                # pipelined: the answers come in command order, a subscribe included
                for n in range(3):
                    await publish(ws, n, n)
                await ws.send_message(json.dumps({"op": "subscribe", "topics": ["v"], "ref": "s"}))
                await publish(ws, 3, 3)
                await publish(ws, 4, {"n": 4})
                answers = [await answer(ws) for _ in range(6)]
                assert [m["event"] for m in answers] == ["broker.ack"] * 6, answers
                assert [m["data"]["ref"] for m in answers] == [0, 1, 2, "s", 3, 4]
                acks = [m["data"] for m in answers if m["data"]["op"] == "publish"]
                assert all(set(ack) == {"ref", "op", "id", "topic"} for ack in acks)
                assert all(ack["topic"] == "w" for ack in acks)
                got = await collect(on_b, 5)  # stored in Redis, read back on the other node
                assert [e.json() for e in got] == [0, 1, 2, 3, {"n": 4}]
                assert [e.id for e in got] == [ack["id"] for ack in acks]

                # Redis hangs: the publish waits for it, the reader still answers pings
                await trio.to_thread.run_sync(persistent_redis.pause)
                await publish(ws, "hung", "never stored")
                with trio.fail_after(0.5):
                    await ws.ping()
                refused = await answer(ws)
                assert refused["event"] == "broker.command_error"
                assert refused["data"]["ref"] == "hung"
                assert refused["data"]["code"] == "store_unavailable"
                assert refused["data"]["retry_after"] >= 1
                # gone for good (what it held unanswered dies with it); refused at once now
                await trio.to_thread.run_sync(persistent_redis.kill)
                await publish(ws, "down", "refused")
                assert (await answer(ws))["data"]["code"] == "store_unavailable"
                await ws.send_message(json.dumps({"op": "unsubscribe", "topics": ["v"], "ref": 9}))
                assert (await answer(ws))["data"] == {"ref": 9, "op": "unsubscribe", "topics": []}

                # Redis is back (with everything it acknowledged): the same socket publishes
                await trio.to_thread.run_sync(persistent_redis.start)
                while True:
                    await publish(ws, "again", "after")
                    reply = await answer(ws)
                    if reply["event"] == "broker.ack":
                        break
                    assert reply["data"]["code"] == "store_unavailable"
                    await trio.sleep(0.05)
                _recovered, meanwhile = await until(on_b, "broker.recovered")
                rest = meanwhile + await collect(on_b, 1 - len(meanwhile))
                assert [e.data for e in rest] == ["after"]  # nothing refused was stored
                assert rest[0].id == reply["data"]["id"]
            await on_b.aclose()
            nursery.cancel_scope.cancel()
