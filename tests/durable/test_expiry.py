"""Topics nobody uses leave memory; their events stay in the store and come back."""

from __future__ import annotations

import httpx
import trio

from tests.durable.support import replay, sleep_until
from tests.support.servers import open_broker_server
from tests.support.sse_client import open_sse


async def test_idle_topics_leave_memory_and_resume_from_the_store(tmp_path):
    storage = {"kind": "durable", "path": str(tmp_path / "data"), "topic_idle_seconds": 0.2}
    with trio.fail_after(30):
        async with open_broker_server(storage=storage) as server:
            hub = server.hub
            async with httpx.AsyncClient(base_url=server.url) as client:
                ids = {}
                for n in range(300):
                    answer = await client.post(f"/topics/jobs/{n}", content=f"job {n} done")
                    ids[n] = answer.json()["id"]
                for n in range(3):
                    await client.post("/topics/jobs/7", content=f"more {n}")
                last = (await client.post("/topics/jobs/7?final=1", content="end")).json()["id"]
                kept = await client.post("/topics/state?retain=1", content="kept")
                assert hub._topics  # the newest are still there
                await sleep_until(lambda: not hub._topics)
                # A later subscriber resumes exactly from the store ...
                notice, events = await replay(server.url, "jobs/7", ids[7], last)
                assert notice.event == "broker.start"
                assert [e.data for e in events] == ["more 0", "more 1", "more 2", "end"]
                # ... a closed topic stays closed, retained state stays retained.
                refused = await client.post("/topics/jobs/7", content="again")
                assert refused.status_code == 409
                over = await client.get("/topics/jobs/7/events", headers={"Last-Event-ID": last})
                assert over.status_code == 204
                assert kept.status_code == 202
                stream = await open_sse(server.url, "/topics/state/events")
                [state] = await stream.events(1)
                await stream.aclose()
                assert state.data == "kept"
                # An expired topic that is published to again goes on where it was.
                answer = await client.post("/topics/jobs/3", content="again")
                notice, events = await replay(server.url, "jobs/3", ids[3], answer.json()["id"])
                assert [e.data for e in events] == ["again"]


async def test_count_retention_in_the_store_reports_evicted_after_a_restart(tmp_path):
    tables = {
        "storage": {"kind": "durable", "path": str(tmp_path / "data")},
        "history": {"size": 5},
    }
    with trio.fail_after(20):
        async with open_broker_server(**tables) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                ids = [
                    (await client.post("/topics/t", content=f"e{n}")).json()["id"]
                    for n in range(100)
                ]
        async with open_broker_server(**tables) as server:
            notice, events = await replay(server.url, "t", ids[0], ids[-1])
            assert notice.event == "broker.reset"
            assert notice.json()["reason"] == "evicted"
            assert [e.data for e in events] == [f"e{n}" for n in range(95, 100)]
            notice, events = await replay(server.url, "t", ids[96], ids[-1])
            assert notice.event == "broker.start"
            assert [e.data for e in events] == ["e97", "e98", "e99"]
            disk = server.hub.journal.disk
            with disk.env.begin() as txn:  # trimmed in the store, not only in memory
                assert txn.stat(disk.events)["entries"] <= 5 + 32
