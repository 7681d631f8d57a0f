"""Bounded ids and membership over real sockets (issue 20): origins retire, members leave."""

import httpx
import trio

from tests.support.servers import start_node, wait_linked
from tests.support.sse_client import open_sse

FAST = {"retire_after_seconds": 1.0, "remove_after_seconds": 1.5}


async def post(url, topic, data):
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.post(f"/topics/{topic}", json=data)
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]


async def test_restarts_do_not_grow_ids_and_an_id_naming_a_retired_origin_resumes():
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster=FAST)
            b = await start_node(nursery, "b", [a.cluster.addr], cluster=FAST)
            c = await start_node(nursery, "c", [a.cluster.addr], cluster=FAST)
            await wait_linked([a, b, c])
            old_id = None
            origins_seen = set()
            for restart in range(4):
                origins_seen.add(b.hub.origin)
                old_id = await post(b.url, "r", {"restart": restart})
                with trio.fail_after(5):  # replicated before b goes (ack = local)
                    while any(n.hub.vector.get(b.hub.origin, 0) < 1 for n in (a, c)):
                        await trio.sleep(0.02)
                b.request_shutdown()
                b = await start_node(nursery, "b", [a.cluster.addr, c.cluster.addr], cluster=FAST)
                await wait_linked([a, b, c])
            await post(b.url, "r", {"restart": "last"})
            live = {a.hub.origin, b.hub.origin, c.hub.origin}
            with trio.fail_after(15):  # every old origin of b leaves every vector
                while any(set(n.hub.vector) - live for n in (a, b, c)):
                    await trio.sleep(0.05)
            for node in (a, c):  # they had every old origin of b (the last b may not)
                assert origins_seen <= set(node.hub.retired)
            for node in (a, b, c):
                assert len(node.hub.position) <= 3 * 10
            # an id naming a retired origin: it saw everything up to it, nothing is repeated
            stream = await open_sse(a.url, "/topics/r/events", {"Last-Event-ID": old_id})
            start = await stream.next_event()
            assert start.event == "broker.start", start.data
            assert start.json()["resumed"] is True
            [event] = await stream.events(1)
            assert event.json() == {"restart": "last"}
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_a_departed_member_is_removed_everywhere_and_not_dialled_again():
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster=FAST)
            b = await start_node(nursery, "b", [a.cluster.addr], cluster=FAST)
            c = await start_node(nursery, "c", [a.cluster.addr], cluster=FAST)
            await wait_linked([a, b, c])
            await post(c.url, "d", "from c")
            c_origin = c.hub.origin
            c.request_shutdown()
            with trio.fail_after(15):
                while any("c" in n.cluster.membership.members for n in (a, b)):
                    await trio.sleep(0.05)
                while any(c_origin in n.hub.vector for n in (a, b)):
                    await trio.sleep(0.05)
            for node in (a, b):
                assert "c" in node.cluster.membership.tombstones
                assert node.cluster.membership.dial_targets(trio.current_time()) == []
                assert node.cluster.statistics().removed_members >= 1
            # the two that are left keep working
            stream = await open_sse(b.url, "/topics/d/events")
            await stream.next_event()
            await post(a.url, "d", "after")
            assert (await stream.events(1))[0].json() == "after"
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_a_node_that_cannot_catch_up_in_time_asks_the_client_to_retry():
    """It never starts the stream behind the client (ids would move it backwards)."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster={"catchup_seconds": 0.5})
            b = await start_node(nursery, "b", [a.cluster.addr], cluster={"catchup_seconds": 0.5})
            await wait_linked([a, b])
            a.cluster.isolate("b")
            b.cluster.isolate("a")
            with trio.fail_after(5):
                while a.cluster.links:
                    await trio.sleep(0.02)
            seen = await post(a.url, "k", "only on a")
            stream = await open_sse(b.url, "/topics/k/events", {"Last-Event-ID": seen})
            assert stream.status == 200
            notice = await stream.next_event()
            assert notice.event == "broker.degraded"
            assert await stream.next_event() is None  # the stream ends: the client retries
            await stream.aclose()
            a.cluster.heal("b")
            b.cluster.heal("a")
            await wait_linked([a, b])
            await post(a.url, "k", "after")
            stream = await open_sse(b.url, "/topics/k/events", {"Last-Event-ID": seen})
            start = await stream.next_event()
            assert start.event == "broker.start"
            assert [e.json() for e in await stream.events(1)] == ["after"]
            await stream.aclose()
            nursery.cancel_scope.cancel()
