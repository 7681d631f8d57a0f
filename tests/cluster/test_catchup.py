"""Catch-up over real sockets: a node restarted far behind loses nothing (issue 20)."""

import time

import httpx
import trio

from tests.support.servers import start_node, wait_linked
from tests.support.sse_client import open_sse

BACKLOG = 15_000


async def publish_backlog(origin_node, replica, count):
    """Publish ``count`` events on ``origin_node``, in steps its live replica keeps up with."""
    hub = origin_node.hub
    for start in range(0, count, 500):
        for n in range(start, min(count, start + 500)):
            hub.publish_nowait(f"t{n % 3}", str(n))
        while replica.hub.vector.get(hub.origin, 0) < hub.vector[hub.origin]:
            await trio.sleep(0.01)


async def test_node_restarted_15000_behind_while_publishing_goes_on_converges_with_no_loss():
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [])
            b = await start_node(nursery, "b", [a.cluster.addr])
            c = await start_node(nursery, "c", [a.cluster.addr])
            await wait_linked([a, b, c])
            b.request_shutdown()
            with trio.fail_after(5):
                while len(a.cluster.links) != 1:
                    await trio.sleep(0.02)
            await publish_backlog(a, c, BACKLOG)

            stop = trio.Event()
            published = []

            async def keep_publishing():
                async with httpx.AsyncClient(base_url=a.url) as client:
                    while not stop.is_set():
                        answer = await client.post("/topics/t0", content="live")
                        assert answer.status_code == 202
                        published.append(answer.json()["id"])
                        await trio.sleep(0.005)  # a paced publisher, ~200/s at most

            nursery.start_soon(keep_publishing)
            with trio.fail_after(5):
                while len(published) < 10:
                    await trio.sleep(0.01)
            started = time.monotonic()
            b2 = await start_node(nursery, "b", [a.cluster.addr, c.cluster.addr])
            stream = await open_sse(b2.url, "/topics/t1/events")
            await stream.next_event()
            origin = a.hub.origin
            with trio.fail_after(20):
                while b2.hub.vector.get(origin, 0) < BACKLOG:
                    await trio.sleep(0.01)
            elapsed = time.monotonic() - started
            stop.set()
            with trio.fail_after(10):
                while b2.hub.vector.get(origin, 0) < a.hub.vector[origin]:
                    await trio.sleep(0.01)
            total = a.hub.vector[origin]
            stats = b2.cluster.statistics()
            print(
                f"\ncatch-up: {BACKLOG} events in {elapsed:.2f} s = {BACKLOG / elapsed:.0f} "
                f"events/s while {len(published)} more were published; total {total}; "
                f"duplicates {stats.duplicates}, catch-up {stats.catchup}"
            )
            assert b2.hub.lost == 0
            assert stats.catchup.gaps == 0
            log = b2.hub._logs[origin]
            assert [e.seq for e in log] == list(range(1, total + 1))  # every one, in order
            assert [e.data for e in log if e.data != "live"] == [str(n) for n in range(BACKLOG)]
            await stream.aclose()
            assert a.hub.lost == c.hub.lost == 0
            nursery.cancel_scope.cancel()
