"""Real broker processes under real faults (issue 20): SIGSTOP, kill -9 with ack=replicated."""

import httpx
import pytest
import trio

from broker.core import positions
from tests.support.mesh import Mesh
from tests.support.sse_client import open_sse


@pytest.mark.slow
async def test_a_node_waking_from_a_pause_keeps_the_links_that_still_work():
    mesh = Mesh(3, down_after_seconds="2")
    try:
        with trio.fail_after(60):
            await mesh.start()
            before = [await mesh.stats(i) for i in range(3)]
            stream = await open_sse(mesh.nodes[1].url, "/topics/p/events")
            await stream.next_event()
            mesh.pause(1)
            await trio.sleep(1.7)  # the pause itself: shorter than the peers' down_after
            async with httpx.AsyncClient(base_url=mesh.nodes[0].url) as client:
                assert (await client.post("/topics/p", json="while paused")).status_code == 202
            mesh.resume(1)
            assert (await stream.events(1))[0].json() == "while paused"
            await trio.sleep(1.0)  # a few heartbeats after waking, still linked
            after = [await mesh.stats(i) for i in range(3)]
            for old, new in zip(before, after, strict=True):
                assert new["cluster"]["links_opened"] == old["cluster"]["links_opened"], new
                assert all(p["state"] == "up" for p in new["cluster"]["peers"])
            assert after[1]["cluster"]["pauses"] >= 1
            await stream.aclose()
    finally:
        mesh.close()


@pytest.mark.slow
async def test_a_process_restarted_15000_events_behind_converges_with_no_loss():
    mesh = Mesh(3)
    try:
        with trio.fail_after(60):
            await mesh.start()
            a_url = mesh.nodes[0].url
            mesh.kill(1)
            async with httpx.AsyncClient(base_url=a_url, timeout=10) as client:
                for start in range(0, 15_000, 500):
                    batch = [{"topic": f"t{n % 3}", "data": n} for n in range(start, start + 500)]
                    answer = await client.post("/publish", json={"events": batch})
                    assert answer.status_code == 202
                origin = (await client.get("/stats")).json()["origin"]
            stop = trio.Event()
            live = []

            async def keep_publishing():
                async with httpx.AsyncClient(base_url=a_url) as client:
                    while not stop.is_set():
                        answer = await client.post("/topics/t0", json="live")
                        assert answer.status_code == 202
                        live.append(1)
                        await trio.sleep(0.005)  # a paced publisher, ~200/s at most

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_publishing)
                await mesh.restart(1)
                began = trio.current_time()  # it listens: linking and catch-up from here
                with trio.fail_after(20):
                    while True:
                        stats = await mesh.stats(1)
                        have = positions.parse_position(stats["position"]).get(origin, 0)
                        if have >= 15_000:
                            break
                        await trio.sleep(0.02)
                elapsed = trio.current_time() - began
                stop.set()
            await mesh.wait_converged(timeout=15)
            stats = await mesh.stats(1)
            print(
                f"\nprocess catch-up: 15000 events in {elapsed:.2f} s (from listening, "
                f"linking included) = {15_000 / elapsed:.0f} events/s, {len(live)} published "
                f"meanwhile; {stats['cluster']['catchup']}"
            )
            assert stats["cluster"]["lost"] == 0
            assert stats["cluster"]["catchup"]["gaps"] == 0
            assert stats["cluster"]["replicated_in"] == 15_000 + len(live)
    finally:
        mesh.close()


@pytest.mark.slow
async def test_kill_9_under_four_flat_out_publishers_loses_no_replicated_event():
    """Issue 20: with ack=local, 4 events that got 202 never reached the other nodes."""
    mesh = Mesh(3, history_size=100_000)
    try:
        with trio.fail_after(60):
            await mesh.start()
            streams = [
                await open_sse(mesh.nodes[i].url, "/topics/k/events?envelope=0") for i in (1, 2)
            ]
            for stream in streams:
                await stream.next_event()
            acked = set()

            async def flat_out(p):
                n = 0
                async with httpx.AsyncClient(base_url=mesh.nodes[0].url, timeout=5) as client:
                    while True:
                        n += 1
                        try:
                            answer = await client.post(
                                "/topics/k", json=[p, n], headers={"X-Broker-Ack": "replicated"}
                            )
                        except httpx.HTTPError:
                            return  # the node is gone
                        if answer.status_code == 202:
                            acked.add((p, n))
                            if len(acked) == 500:
                                # at once, while its peers may not have the event yet
                                mesh.kill(0)

            async with trio.open_nursery() as nursery:
                for p in range(4):
                    nursery.start_soon(flat_out, p)
            received = [set(), set()]
            with trio.move_on_after(10):
                for got, stream in zip(received, streams, strict=True):
                    while not acked <= got:
                        event = await stream.next_event()
                        assert event is not None
                        if not (event.event or "").startswith("broker."):
                            got.add(tuple(event.json()))
            print(
                f"\n{len(acked)} acknowledged before kill -9; on b {len(received[0])}, on c "
                f"{len(received[1])} (unacknowledged ones may be there too)"
            )
            for got in received:
                assert acked <= got, f"{len(acked - got)} acknowledged events lost"
            for stream in streams:
                await stream.aclose()
    finally:
        mesh.close()


@pytest.mark.slow
async def test_with_both_peers_stalled_local_acks_what_kill_9_loses_and_replicated_does_not():
    """The difference between the levels: ``local`` answers 202 for events still queued
    for stalled peers, and ``kill -9`` loses them; ``replicated`` answers 503 instead."""
    mesh = Mesh(3, ack_timeout_seconds="1")
    try:
        with trio.fail_after(60):
            await mesh.start()
            a = mesh.nodes[0].url
            mesh.pause(1)
            mesh.pause(2)
            big = "x" * 200_000  # 60 of them fill the kernel's socket buffers
            local = []
            async with httpx.AsyncClient(base_url=a, timeout=10) as client:
                for n in range(60):
                    answer = await client.post("/topics/s", json=[n, big])
                    assert answer.status_code == 202
                    local.append(n)
                answer = await client.post(
                    "/topics/s", json=["r", big], params={"ack": "replicated"}
                )
                assert answer.status_code == 503
                assert answer.json()["code"] == "not_replicated"
            mesh.kill(0)
            mesh.resume(1)
            mesh.resume(2)
            await mesh.wait_linked()
            await mesh.wait_converged()
            stats = [await mesh.stats(i) for i in (1, 2)]
            delivered = [s["cluster"]["replicated_in"] for s in stats]
            print(f"\nack=local: 60 acknowledged, {delivered} reached the survivors")
            assert min(delivered) < len(local)  # what local acknowledged was lost
    finally:
        mesh.close()
