"""Where a new subscriber starts (last, since), retained state and terminal events."""

import json
import time
from datetime import UTC, datetime

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.support.servers import open_broker_server
from tests.support.sse_client import open_sse


async def post(client, topic, data, **params):
    answer = await client.post(f"/topics/{topic}", json=data, params=params)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


async def test_last_n_replays_the_newest_events_of_all_topics_then_live():
    with trio.fail_after(10):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as c:
            for n in range(6):
                await post(c, "ab"[n % 2], n)
            await post(c, "other", 99)
            stream = await open_sse(server.url, "/events?topic=a&topic=b&last=3")
            start = await stream.next_event()
            assert [e.json() for e in await stream.events(3)] == [3, 4, 5]
            await post(c, "a", 6)
            assert (await stream.events(1))[0].json() == 6
            await stream.aclose()
            # the start id resumes exactly: the same three, then what came since
            again = await open_sse(
                server.url, "/events?topic=a&topic=b", {"Last-Event-ID": start.id}
            )
            assert (await again.next_event()).event == "broker.start"
            assert [e.json() for e in await again.events(4)] == [3, 4, 5, 6]
            await again.aclose()


async def test_since_returns_exactly_the_events_inside_the_window():
    with trio.fail_after(10):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as c:
            for n in range(3):
                await post(c, "w", n)
            boundary = time.time()
            for n in range(3, 6):
                await post(c, "w", n)
            stamp = datetime.fromtimestamp(boundary, UTC).isoformat().replace("+00:00", "Z")
            stream = await open_sse(server.url, f"/topics/w/events?since={stamp}")
            await stream.next_event()
            assert [e.json() for e in await stream.events(3)] == [3, 4, 5]
            await stream.aclose()
            hour = await open_sse(server.url, "/topics/w/events?since=3600&last=4")
            await hour.next_event()
            assert [e.json() for e in await hour.events(4)] == [2, 3, 4, 5]
            await hour.aclose()
            for bad in ["since=yesterday", "since=-5", "last=x", "since=2026-01-01T00:00:00"]:
                answer = await c.get(f"/topics/w/events?{bad}")
                assert answer.status_code == 400, bad


async def test_retained_state_comes_first_and_survives_history_eviction():
    with trio.fail_after(10):
        async with (
            open_broker_server(history={"size": 2}) as server,
            httpx.AsyncClient(base_url=server.url) as c,
        ):
            await post(c, "alerts", {"unacked": 1}, event="summary", retain="1")
            await post(c, "alerts", {"unacked": 2}, event="summary", retain="1")
            await post(c, "alerts", {"state": "started"}, event="progress", retain="1")
            for n in range(5):
                await post(c, "alerts", {"n": n}, event="new_event")
            late = await open_sse(server.url, "/topics/alerts/events")
            start = await late.next_event()
            first = await late.events(2)
            assert [(e.event, e.json()) for e in first] == [
                ("summary", {"unacked": 2}),
                ("progress", {"state": "started"}),
            ]
            assert all(e.id == start.id for e in first)  # never moves the client backwards
            await post(c, "alerts", {"n": 5}, event="new_event")
            assert (await late.events(1))[0].json() == {"n": 5}
            await late.aclose()
            cleared = await c.delete("/topics/alerts/retained", params={"event": "summary"})
            assert cleared.json()["cleared"] == 1
            again = await open_sse(server.url, "/topics/alerts/events")
            await again.next_event()
            assert (await again.events(1))[0].event == "progress"
            await again.aclose()


async def test_final_event_ends_streams_and_late_joiners_get_it():
    with trio.fail_after(10):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as c:
            live = await open_sse(server.url, "/topics/jobs/1/events")
            both = await open_sse(server.url, "/events?topic=jobs/1&topic=jobs/2")
            await live.next_event()
            await both.next_event()
            await post(c, "jobs/1", {"stage": "rerank"}, event="progress", retain="1")
            final_id = await post(c, "jobs/1", {"results": [1]}, event="complete", final="1")
            events = [await live.next_event() for _ in range(3)]
            assert [e.event for e in events] == ["progress", "complete", "broker.end"]
            assert events[2].json() == {"topic": "jobs/1"}
            assert await live.next_event() is None  # the stream is over
            # a multi-topic stream keeps going for its other topics
            assert [(await both.next_event()).event for _ in range(3)] == [
                "progress",
                "complete",
                "broker.end",
            ]
            await post(c, "jobs/2", "still open")
            assert (await both.events(1))[0].data == '"still open"'
            await both.aclose()
            # publishing to a closed topic is refused
            refused = await c.post("/topics/jobs/1", json={})
            assert refused.status_code == 409
            assert refused.json()["code"] == "topic_closed"
            # a late joiner gets the current state and the final event, then the end
            late = await open_sse(server.url, "/topics/jobs/1/events")
            late_events = [await late.next_event() for _ in range(4)]
            assert [e.event for e in late_events] == [
                "broker.start",
                "progress",
                "complete",
                "broker.end",
            ]
            assert await late.next_event() is None
            # a client that already has the final event is told to stop reconnecting
            done = await c.get("/topics/jobs/1/events", headers={"Last-Event-ID": final_id})
            assert done.status_code == 204
            # forgetting the topic makes it usable again
            assert (await c.delete("/topics/jobs/1")).json()["forgotten"] is True
            await post(c, "jobs/1", "reused")


async def test_websocket_gets_the_same_start_options():
    with trio.fail_after(10):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as c:
            for n in range(4):
                await post(c, "wst", n)
            await post(c, "wst", "state", event="summary", retain="1")
            url = server.url.replace("http", "ws") + "/topics/wst/ws?last=2"
            async with open_websocket_url(url) as ws:
                messages = [json.loads(await ws.get_message()) for _ in range(3)]
                assert [m["event"] for m in messages] == ["broker.start", None, "summary"]
                assert messages[1]["data"] == 3


async def test_end_closes_cleanly_on_websocket_and_on_hypercorn_streams():
    from trio_websocket import ConnectionClosed

    with trio.fail_after(10):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as c:
            url = server.url.replace("http", "ws") + "/topics/done/1/ws"
            async with open_websocket_url(url) as ws:
                await ws.get_message()
                await post(c, "done/1", "bye", final="1")
                kinds = [json.loads(await ws.get_message())["event"] for _ in range(2)]
                assert kinds == [None, "broker.end"]
                try:
                    await ws.get_message()
                except ConnectionClosed:
                    pass
                assert ws.closed.code == 1000
            # an SSE stream served by hypercorn (after a page on the same connection) ends
            # with a complete chunked body, not a truncated one
            conn = await trio.open_tcp_stream("127.0.0.1", server.port)
            await conn.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b'"ok"}' not in received:
                received += await conn.receive_some(4096)
            await conn.send_all(b"GET /topics/done/2/events HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b"broker.start" not in received:
                received += await conn.receive_some(4096)
            await post(c, "done/2", "bye", final="1")
            while not received.endswith(b"0\r\n\r\n"):
                chunk = await conn.receive_some(4096)
                assert chunk, "the connection closed before the body was finished"
                received += chunk
            assert b"broker.end" in received
            await conn.aclose()
