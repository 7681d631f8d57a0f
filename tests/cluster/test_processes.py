"""Real broker processes under real faults (issue 20): SIGSTOP, kill -9 with ack=replicated."""

import httpx
import pytest
import trio

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
