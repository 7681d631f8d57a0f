"""A mesh node on the durable store keeps its origin and position vector across a restart."""

from __future__ import annotations

import httpx
import trio

from broker.core import positions
from tests.support.servers import start_node, wait_linked
from tests.support.sse_client import open_sse


async def post(url: str, topic: str, value: object) -> str:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{url}/topics/{topic}", json=value)
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]


async def test_restarted_mesh_node_keeps_its_origin_vector_and_peers_events(tmp_path):
    def storage(name: str) -> dict[str, object]:
        return {"storage": {"kind": "durable", "path": str(tmp_path / name)}}

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], **storage("a"))
            async with trio.open_nursery() as first_run:
                b = await start_node(first_run, "b", [a.cluster.addr], **storage("b"))
                await wait_linked([a, b])
                for n in range(5):
                    await post(a.url, "r", n)
                own = await post(b.url, "r", "from b")
                with trio.fail_after(5):
                    while b.hub.vector.get(a.hub.origin, 0) < 5:
                        await trio.sleep(0.02)
                origin, vector = b.hub.origin, dict(b.hub.vector)
                b.request_shutdown()
            with trio.fail_after(5):
                while len(a.cluster.links) != 0:
                    await trio.sleep(0.02)
            b2 = await start_node(nursery, "b", [a.cluster.addr], **storage("b"))
            assert b2.hub.origin == origin  # the same id space goes on
            assert b2.hub.vector == vector  # and it knows what it had, peers' events included
            # The restarted node still serves every origin's events from its own store.
            stream = await open_sse(b2.url, "/topics/r/events", {"Last-Event-ID": f"{origin}-0"})
            start = await stream.next_event()
            assert start.event == "broker.start", start.data
            got = [e.data for e in await stream.events(6)]
            assert got == ["0", "1", "2", "3", "4", '"from b"']
            await stream.aclose()
            assert positions.parse_position(own)[origin] == 1
            nursery.cancel_scope.cancel()


async def test_busy_mesh_on_durable_stores_delivers_every_event_once_in_origin_order(tmp_path):
    def storage(name: str) -> dict[str, object]:
        return {"storage": {"kind": "durable", "path": str(tmp_path / name)}}

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], **storage("a"))
            b = await start_node(nursery, "b", [a.cluster.addr], **storage("b"))
            await wait_linked([a, b])
            streams = [await open_sse(n.url, "/topics/busy/events") for n in (a, b)]
            for stream in streams:
                await stream.next_event()

            async def publish_many(node, name: str) -> None:
                async with httpx.AsyncClient() as client:
                    for n in range(150):
                        answer = await client.post(f"{node.url}/topics/busy", json=[name, n])
                        assert answer.status_code == 202

            async with trio.open_nursery() as publishers:
                for _ in range(2):  # two publishers per node: groups of several events
                    publishers.start_soon(publish_many, a, "a")
                    publishers.start_soon(publish_many, b, "b")
            for stream in streams:
                events = await stream.events(600)
                got = [e.json() for e in events]
                for name in ("a", "b"):
                    mine = [n for who, n in got if who == name]
                    assert sorted(mine) == sorted(list(range(150)) * 2)
                vectors = [positions.parse_position(e.id) for e in events]
                for origin in (a.hub.origin, b.hub.origin):
                    seqs = [v.get(origin, 0) for v in vectors]
                    assert seqs == sorted(seqs)  # each origin's events in its order
                    assert seqs[-1] == 300
                await stream.aclose()
            nursery.cancel_scope.cancel()
