"""Resume with Last-Event-ID (header or query): exact replay, or an in-band reset."""

import httpx
import trio

from tests.support.servers import open_broker_server
from tests.support.sse_client import open_sse


async def publish_many(url, topic, count, start=0):
    async with httpx.AsyncClient(base_url=url) as client:
        ids = []
        for n in range(start, start + count):
            answer = await client.post(f"/topics/{topic}", json={"n": n})
            ids.append(answer.json()["id"])
        return ids


async def test_resume_replays_exactly_what_was_missed_then_goes_live():
    with trio.fail_after(15):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/topics/r/events")
            await stream.next_event()
            await publish_many(server.url, "r", 5)
            seen = await stream.events(5)
            last_id = seen[2].id  # pretend the client only processed three
            await stream.aclose()
            await publish_many(server.url, "r", 5, start=5)

            resumed = await open_sse(
                server.url, "/topics/r/events", headers={"Last-Event-ID": last_id}
            )
            start = await resumed.next_event()
            assert start.event == "broker.start"
            assert start.json()["resumed"] is True
            replay = await resumed.events(7)
            assert [e.json()["n"] for e in replay] == list(range(3, 10))
            await publish_many(server.url, "r", 1, start=10)
            [live] = await resumed.events(1)
            assert live.json()["n"] == 10
            await resumed.aclose()


async def test_resume_by_query_parameter_and_from_start_id():
    """A client that got only broker.start can still resume exactly from its id."""
    with trio.fail_after(15):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/events?topic=q&topic=p")
            start = await stream.next_event()
            await stream.aclose()
            await publish_many(server.url, "q", 2)
            await publish_many(server.url, "other", 2)
            await publish_many(server.url, "p", 2, start=2)
            resumed = await open_sse(
                server.url, f"/events?topic=q&topic=p&last_event_id={start.id}"
            )
            assert (await resumed.next_event()).event == "broker.start"
            assert [e.json()["n"] for e in await resumed.events(4)] == [0, 1, 2, 3]
            await resumed.aclose()


async def test_multi_topic_resume_has_no_gap_and_no_duplicate_at_the_seam():
    """Reconnect every 20 events while a publisher keeps going on two topics."""
    with trio.fail_after(20):
        async with open_broker_server() as server:
            stream = await open_sse(server.url, "/events?topic=a&topic=b")
            last_id = (await stream.next_event()).id

            async def publisher():
                async with httpx.AsyncClient(base_url=server.url) as client:
                    for n in range(200):
                        await client.post(f"/topics/{'ab'[n % 2]}", json={"n": n})

            received = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publisher)
                while True:
                    batch = await stream.events(min(20, 200 - len(received)))
                    received.extend(e.json()["n"] for e in batch)
                    last_id = batch[-1].id
                    await stream.aclose()
                    if len(received) == 200:
                        break
                    stream = await open_sse(
                        server.url, "/events?topic=a&topic=b", {"Last-Event-ID": last_id}
                    )
                    assert (await stream.next_event()).event == "broker.start"
            assert received == list(range(200))


async def test_unparsable_unknown_and_evicted_ids_still_stream_with_a_reset():
    with trio.fail_after(15):
        async with open_broker_server(history={"size": 3}) as server:
            await publish_many(server.url, "h", 6)
            # unparsable (e.g. an older id format): 200, reset, then live
            stream = await open_sse(server.url, "/topics/h/events", {"Last-Event-ID": "42"})
            assert stream.status == 200
            reset = await stream.next_event()
            assert reset.event == "broker.reset"
            assert reset.json()["reason"] == "unparsable"
            assert reset.id == reset.json()["position"]
            await publish_many(server.url, "h", 1, start=6)
            assert (await stream.events(1))[0].json()["n"] == 6
            await stream.aclose()

            # unknown origin (a restarted broker): reset, then what history has
            stream = await open_sse(server.url, "/topics/h/events", {"Last-Event-ID": "zzzzzz-5"})
            reset = await stream.next_event()
            assert (reset.event, reset.json()["reason"]) == ("broker.reset", "unknown")
            assert [e.json()["n"] for e in await stream.events(3)] == [4, 5, 6]
            await stream.aclose()

            # evicted: history kept 3 of 7, the client had seen 1
            first_id = f"{server.hub.origin}-1"
            stream = await open_sse(server.url, "/topics/h/events", {"Last-Event-ID": first_id})
            reset = await stream.next_event()
            assert (reset.event, reset.json()["reason"]) == ("broker.reset", "evicted")
            assert [e.json()["n"] for e in await stream.events(3)] == [4, 5, 6]
            await stream.aclose()


async def test_resume_is_exact_within_history():
    with trio.fail_after(15):
        async with open_broker_server(history={"size": 3}) as server:
            ids = await publish_many(server.url, "h", 6)
            stream = await open_sse(server.url, "/topics/h/events", {"Last-Event-ID": ids[2]})
            start = await stream.next_event()
            assert start.event == "broker.start"
            assert [e.json()["n"] for e in await stream.events(3)] == [3, 4, 5]
            await stream.aclose()
