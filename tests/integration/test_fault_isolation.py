"""An unexpected exception in one connection's handler ends that connection alone (issue 17).

Each test injects a fault (a function the handler uses raises ``RuntimeError`` once) into
one kind of per-connection task of a real broker on a real socket, and shows: that
connection gets a 500 JSON / close 1011 / closed link, ``broker_internal_errors_total``
went up for that place (``/metrics`` and ``/stats``), a bystander SSE subscriber on another
connection keeps receiving what is published afterwards, and new connections are served.
Without broker/guard.py each of these faults ended the whole process.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

import broker.control.app
import broker.edge.dataplane
import broker.edge.session
import broker.edge.wsconnection
from tests.support.faults import (
    Injected,
    bystander_keeps_receiving,
    fail_once,
    internal_errors,
    only,
    open_watcher,
)
from tests.support.servers import open_broker_server, start_node, wait_linked
from tests.support.sse_client import open_sse


async def test_publish_handler_fault_is_a_500_for_that_request_only(monkeypatch, caplog):
    with trio.fail_after(10):
        async with open_broker_server() as server:
            watcher = await open_watcher(server)
            raised = fail_once(
                monkeypatch,
                broker.edge.dataplane,
                "publish",
                lambda hub, policy, route, *_: route.topics == ("boom",),
            )
            async with httpx.AsyncClient(base_url=server.url) as client:
                answer = await client.post("/topics/boom", content=b"x")
            assert raised == [1]
            assert answer.status_code == 500
            assert answer.json() == {"error": "internal error", "code": "internal_error"}
            assert answer.headers["connection"] == "close"
            assert await internal_errors(server) == only("http")
            assert server.hub.statistics().published == 0
            # one log line: the connection's id, where, and the traceback
            [line] = [r for r in caplog.records if r.name == "broker.core.guard"]
            assert re.match(r"http 127\.0\.0\.1:\d+: internal error \(http\)", line.getMessage())
            assert line.exc_info is not None
            assert line.exc_info[0] is Injected
            await bystander_keeps_receiving(server, watcher, 1)
            await watcher.aclose()


async def test_sse_fault_before_the_head_is_a_500_after_it_a_closed_stream(monkeypatch):
    with trio.fail_after(10):
        async with open_broker_server() as server:
            watcher = await open_watcher(server)
            fail_once(monkeypatch, broker.edge.session, "stream_options")
            early = await open_sse(server.url, "/topics/x/events")
            assert early.status == 500
            assert json.loads(early.buffer) == {"error": "internal error", "code": "internal_error"}
            await early.aclose()
            assert await internal_errors(server) == only("sse")

            # After the head: the stream is answered, so the fault closes it (no 500 inside).
            fail_once(monkeypatch, broker.edge.dataplane, "_wait_until_closed")
            late = await open_sse(server.url, "/topics/x/events")
            assert late.status == 200
            assert (await late.next_event()).event == "broker.start"
            assert await late.next_event() is None  # closed by the broker
            assert b"internal_error" not in late.raw
            await late.aclose()
            assert await internal_errors(server) == only("sse", 2)
            await bystander_keeps_receiving(server, watcher, 1)
            with trio.fail_after(5):
                while server.hub.statistics().subscribers != 1:  # only the bystander left
                    await trio.sleep(0.01)
            await watcher.aclose()


async def test_websocket_fault_closes_that_socket_with_1011(monkeypatch):
    with trio.fail_after(10):
        async with open_broker_server() as server:
            watcher = await open_watcher(server)
            url = server.url.replace("http://", "ws://") + "/ws"
            async with open_websocket_url(url) as bystander_ws:
                assert json.loads(await bystander_ws.get_message())["event"] == "broker.start"
                fail_once(monkeypatch, broker.edge.wsconnection, "parse_command")
                async with open_websocket_url(url) as ws:
                    await ws.send_message(json.dumps({"op": "subscribe", "topics": ["a"]}))
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            await ws.get_message()
                    assert closed.value.reason.code == 1011
                assert await internal_errors(server) == only("ws")
                # another WebSocket on the same broker goes on with its commands
                await bystander_ws.send_message(json.dumps({"op": "subscribe", "topics": ["w"]}))
                ack = json.loads(await bystander_ws.get_message())
                assert ack["event"] == "broker.ack"
            await bystander_keeps_receiving(server, watcher, 1)
            await watcher.aclose()


async def test_handoff_route_fault_is_a_json_500(monkeypatch):
    with trio.fail_after(10):
        async with open_broker_server() as server:
            watcher = await open_watcher(server)
            fail_once(monkeypatch, broker.control.app, "asdict")  # used by GET /stats (hypercorn)
            async with httpx.AsyncClient(base_url=server.url) as client:
                answer = await client.get("/stats")
                assert answer.status_code == 500
                assert answer.json() == {"error": "internal error", "code": "internal_error"}
                # the same hypercorn connection serves its next request
                assert (await client.get("/healthz")).status_code == 200
            assert await internal_errors(server) == only("handoff")
            await bystander_keeps_receiving(server, watcher, 1)
            await watcher.aclose()


async def test_peer_link_fault_closes_that_link_and_the_cluster_heals(monkeypatch):
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [])
            b = await start_node(nursery, "b", [a.cluster.addr])
            await wait_linked([a, b])
            watcher = await open_watcher(b)
            raised = fail_once(monkeypatch, b.cluster.replicator, "receive")
            async with httpx.AsyncClient(base_url=a.url) as client:
                assert (await client.post("/topics/watch", content=b"lost?")).status_code == 202
            while not raised[0]:
                await trio.sleep(0.01)
            assert (await internal_errors(b))["peer"] == 1
            assert (await internal_errors(a))["peer"] == 0
            await wait_linked([a, b])  # dialed again with backoff
            # anti-entropy sends the event whose frame hit the fault, then later ones
            [event] = await watcher.events(1)
            assert event.data == "lost?"
            await bystander_keeps_receiving(b, watcher, 1)
            async with httpx.AsyncClient(base_url=a.url) as client:
                assert (await client.post("/topics/watch", content=b"from a")).status_code == 202
            [event] = await watcher.events(1)
            assert event.data == "from a"
            await watcher.aclose()
            a.request_shutdown()
            b.request_shutdown()
