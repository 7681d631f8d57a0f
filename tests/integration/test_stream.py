"""SSE subscribe and HTTP publish against a real broker over real sockets."""

import json

import httpx
import msgpack
import trio

from tests.support.servers import open_broker_server
from tests.support.sse_client import open_sse
from tests.support.waiting import wait_for


async def publish(url, topic, body, content_type="application/json", **params):
    async with httpx.AsyncClient(base_url=url) as client:
        return await client.post(
            f"/topics/{topic}", content=body, headers={"Content-Type": content_type}, params=params
        )


async def test_publish_reaches_subscriber_with_resumable_id():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/topics/jobs/events")
            assert stream.status == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["cache-control"] == "no-cache"
            assert stream.headers["x-accel-buffering"] == "no"
            start = await stream.next_event()
            assert start.event == "broker.start"
            assert start.retry == 3000
            assert start.json()["position"] == start.id
            answer = await publish(
                server.url, "jobs", '{"stage":"vector_search","progress":0.4}', event="progress"
            )
            assert answer.status_code == 202
            assert answer.json()["topic"] == "jobs"
            [event] = await stream.events(1)
            assert event.event == "progress"
            assert event.data == '{"stage":"vector_search","progress":0.4}'
            assert event.id == answer.json()["id"]
            await stream.aclose()


async def test_frame_bytes_follow_the_sse_rules():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/events?topic=t")
            await stream.next_event()
            text = "안녕하세요\r\nline two\rline three\nend\u2028same line"
            answer = await publish(server.url, "t", text.encode(), "text/plain; charset=utf-8")
            event_id = answer.json()["id"]
            [event] = await stream.events(1)
            expected = (
                f"id: {event_id}\ndata: 안녕하세요\ndata: line two\ndata: line three\n"
                "data: end\u2028same line\n\n"
            ).encode()
            assert expected in bytes(stream.raw)
            assert event.data == "안녕하세요\nline two\nline three\nend\u2028same line"
            assert not bytes(stream.raw).startswith(b"\xef\xbb\xbf")
            await stream.aclose()


async def test_empty_and_space_payloads():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/topics/t/events")
            await stream.next_event()
            await publish(server.url, "t", b"", "text/plain")
            await publish(server.url, "t", b"  two leading spaces", "text/plain")
            first, second = await stream.events(2)
            assert first.data == ""
            assert second.data == "  two leading spaces"
            assert b"data: \n\n" in bytes(stream.raw)
            await stream.aclose()


async def test_multi_topic_stream_and_envelope():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/events?topic=a&topic=b&envelope=1")
            start = await stream.next_event()
            assert start.json()["event"] == "broker.start"
            await publish(server.url, "a", '{"n":1}', event="x")
            await publish(server.url, "c", '{"n":2}')
            await publish(server.url, "b", "plain", "text/plain")
            first, second = await stream.events(2)
            assert first.event is None  # the type travels inside the envelope
            assert first.json() == {"id": first.id, "topic": "a", "event": "x", "data": {"n": 1}}
            assert second.json() == {"id": second.id, "topic": "b", "event": None, "data": "plain"}
            await stream.aclose()


async def test_msgpack_and_batch_publish():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/events?topic=a&topic=b")
            await stream.next_event()
            answer = await publish(
                server.url, "a", msgpack.packb({"k": "값", "n": [1, 2]}), "application/msgpack"
            )
            assert answer.status_code == 202
            async with httpx.AsyncClient(base_url=server.url) as client:
                batch = await client.post(
                    "/publish",
                    json={
                        "events": [
                            {"topic": "a", "data": "one"},
                            {"topic": "b", "data": {"two": 2}, "event": "num"},
                        ]
                    },
                )
            assert batch.status_code == 202
            ids = batch.json()["ids"]
            assert len(ids) == 2
            first, second, third = await stream.events(3)
            assert json.loads(first.data) == {"k": "값", "n": [1, 2]}
            assert (second.data, second.id) == ("one", ids[0])
            assert (third.data, third.event, third.id) == ('{"two":2}', "num", ids[1])
            await stream.aclose()


async def test_keep_alive_publishes_on_one_connection():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                ids = []
                for n in range(50):
                    answer = await client.post(f"/topics/k?event=n{n}", json={"n": n})
                    assert answer.status_code == 202
                    ids.append(answer.json()["id"])
            assert len(set(ids)) == 50
            assert server.dataplane.statistics().connections == 0 or await _settled(server)
            assert server.hub.statistics().published == 50


async def _settled(server):
    await wait_for(lambda: server.dataplane.statistics().connections == 0)
    return True


async def test_healthz_and_stats_through_hypercorn():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/topics/s/events")
            await stream.next_event()
            await publish(server.url, "s", '"x"')
            await stream.events(1)
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.get("/healthz")).json() == {"status": "ok"}
                stats = (await client.get("/stats")).json()
                missing = await client.get("/nope")
            assert stats["topics"] == 1
            assert stats["subscribers"] == 1
            assert stats["published"] == 1
            assert stats["delivered"] == 1
            assert stats["dropped"] == 0
            assert stats["largest_queue_depth"] == 0
            assert missing.status_code == 404
            assert missing.json()["code"] == "not_found"
            await stream.aclose()
