"""Real broker processes under real faults (issue 20): SIGSTOP, kill -9 with ack=replicated."""

import httpx
import pytest
import trio

from broker import positions
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
