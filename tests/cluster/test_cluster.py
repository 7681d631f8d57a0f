"""A cluster of real brokers on ephemeral ports: replication, resume anywhere, partitions."""

import random

import httpx
import trio

from tests.support.servers import start_node, wait_linked
from tests.support.sse_client import open_sse


async def post(url, topic, data, **params):
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.post(f"/topics/{topic}", json=data, params=params)
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]


async def start_three(nursery, **tables):
    a = await start_node(nursery, "a", [], **tables)
    b = await start_node(nursery, "b", [a.cluster.addr], **tables)
    c = await start_node(nursery, "c", [b.cluster.addr], **tables)  # learns a by gossip
    await wait_linked([a, b, c])
    return a, b, c


def history(server, topic):
    state = server.hub._topics.get(topic)
    return {(e.origin, e.seq, e.data) for e in state.history.events} if state else set()


async def wait_converged(servers, topics, timeout=15):
    with trio.fail_after(timeout):
        while True:
            vectors = [dict(s.hub.vector) for s in servers]
            origins = set().union(*vectors)
            same_vectors = all(len({v.get(o, 0) for v in vectors}) == 1 for o in origins)
            if same_vectors and all(
                len({frozenset(history(s, t)) for s in servers}) == 1 for t in topics
            ):
                return
            await trio.sleep(0.05)


async def test_publish_on_one_node_reaches_every_node_once_in_order():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_three(nursery)
            streams = [await open_sse(s.url, "/topics/t/events") for s in (a, b, c)]
            for stream in streams:
                await stream.next_event()
            for n in range(50):
                await post(a.url, "t", n)
            for stream in streams:
                events = await stream.events(50)
                assert [e.json() for e in events] == list(range(50))
                assert len({e.id for e in events}) == 50
            # events from b and c interleave, each origin in order on every node
            for n in range(20):
                await post((b, c)[n % 2].url, "t", {"from": "bc"[n % 2], "n": n})
            for stream in streams:
                got = [e.json() for e in await stream.events(20)]
                assert [g["n"] for g in got if g["from"] == "b"] == list(range(0, 20, 2))
                assert [g["n"] for g in got if g["from"] == "c"] == list(range(1, 20, 2))
            for stream in streams:
                await stream.aclose()
            # one origin, every event pushed once on each link, nothing pulled twice
            for node in (a, b, c):
                stats = node.cluster.statistics()
                assert stats.duplicates == 0, stats
                assert stats.lost == 0, stats
            nursery.cancel_scope.cancel()


async def test_subscriber_switches_node_mid_stream_and_misses_nothing():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_three(nursery)
            stream = await open_sse(a.url, "/events?topic=x&topic=y")
            await stream.next_event()
            for n in range(10):
                await post((a, b, c)[n % 3].url, "xy"[n % 2], n)
            seen = await stream.events(6)
            await stream.aclose()
            for n in range(10, 20):
                await post((a, b, c)[n % 3].url, "xy"[n % 2], n)
            moved = await open_sse(c.url, "/events?topic=x&topic=y", {"Last-Event-ID": seen[-1].id})
            assert (await moved.next_event()).event == "broker.start"
            rest = await moved.events(14)
            numbers = [e.json() for e in seen + rest]
            assert sorted(numbers) == list(range(20))  # nothing lost, nothing twice
            await moved.aclose()
            nursery.cancel_scope.cancel()


async def test_restarted_node_catches_up_and_resumes_exactly():
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, _c = await start_three(nursery)
            stream = await open_sse(b.url, "/topics/r/events")
            await stream.next_event()
            await post(a.url, "r", "before")
            [first] = await stream.events(1)
            await stream.aclose()
            b.request_shutdown()
            with trio.fail_after(5):
                while len(a.cluster.links) != 1:
                    await trio.sleep(0.02)
            for n in range(100):
                await post(a.url, "r", n)
            b2 = await start_node(nursery, "b", [a.cluster.addr])
            resumed = await open_sse(b2.url, "/topics/r/events", {"Last-Event-ID": first.id})
            start = await resumed.next_event()
            assert start.event == "broker.start", start.data
            assert [e.json() for e in await resumed.events(100)] == list(range(100))
            await resumed.aclose()
            nursery.cancel_scope.cancel()


async def test_partition_heals_and_every_node_converges():
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_three(nursery)
            on_a = await open_sse(a.url, "/topics/p/events")
            on_c = await open_sse(c.url, "/topics/p/events")
            await on_a.next_event()
            await on_c.next_event()
            a.cluster.isolate("c")
            c.cluster.isolate("a")
            b.cluster.isolate("a")  # b can't relay either: a real partition {a} | {b, c}
            a.cluster.isolate("b")
            with trio.fail_after(5):
                while a.cluster.links:
                    await trio.sleep(0.02)
            for n in range(30):
                await post(a.url, "p", {"side": "a", "n": n})
                await post(c.url, "p", {"side": "c", "n": n})
            for node in "bc":
                a.cluster.heal(node)
            for cluster, node in ((b.cluster, "a"), (c.cluster, "a")):
                cluster.heal(node)
            await wait_converged([a, b, c], ["p"])
            for stream in (on_a, on_c):
                got = [e.json() for e in await stream.events(60)]
                assert sorted((g["side"], g["n"]) for g in got) == sorted(
                    (side, n) for side in "ac" for n in range(30)
                )
                assert [g["n"] for g in got if g["side"] == "a"] == list(range(30))
                await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_randomized_publishes_partitions_and_restarts_converge():
    rng = random.Random(20261125)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = list(await start_three(nursery))
            names = ["a", "b", "c"]
            for step in range(60):
                action = rng.random()
                i = rng.randrange(3)
                if action < 0.7:
                    await post(nodes[i].url, f"topic{rng.randrange(3)}", {"step": step})
                elif action < 0.85:
                    j = (i + 1 + rng.randrange(2)) % 3
                    nodes[i].cluster.isolate(names[j])
                    nodes[j].cluster.isolate(names[i])
                elif action < 0.95:
                    for node in nodes:
                        for name in names:
                            node.cluster.heal(name)
                else:
                    nodes[i].request_shutdown()
                    seeds = [n.cluster.addr for k, n in enumerate(nodes) if k != i]
                    nodes[i] = await start_node(nursery, names[i], seeds)
                await trio.sleep(rng.random() * 0.05)
            for node in nodes:
                for name in names:
                    node.cluster.heal(name)
            await wait_linked(nodes, timeout=15)
            await wait_converged(nodes, ["topic0", "topic1", "topic2"], timeout=20)
            nursery.cancel_scope.cancel()
