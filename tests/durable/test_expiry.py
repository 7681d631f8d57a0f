"""Topics nobody uses leave memory; their events stay in the store and come back."""

from __future__ import annotations

import gc
import os
import weakref

import httpx
import trio

from broker.core.topics import check_topic
from broker.edge import routes
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


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _mapped_kib(path) -> int:
    """How much of the store file is mapped into this process (KiB of RSS)."""
    target = os.path.realpath(path / "data.mdb")
    total = 0
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping's first line: range, perms, … path
                inside = len(fields) >= 6 and fields[5] == target
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


async def test_a_mass_expiry_gives_back_what_the_gone_topics_left(tmp_path):
    """Memos of their names, garbage cycles and the store's mapped pages all go."""
    data = tmp_path / "data"
    storage = {"kind": "durable", "path": str(data), "topic_idle_seconds": 2}
    payload = "x" * 800
    gc.disable()  # only the expiry's own collection may free the cycle below
    try:
        with trio.fail_after(20):
            async with open_broker_server(storage=storage) as server:
                disk = server.hub.journal.disk
                async with httpx.AsyncClient(base_url=server.url) as client:
                    for start in range(0, 4000, 1000):  # expiry needs >= 1000 in one round
                        events = [
                            {"topic": f"jobs/{n}", "data": payload}
                            for n in range(start, start + 1000)
                        ]
                        answer = await client.post("/publish", json={"events": events})
                        assert answer.status_code == 202, answer.text
                    for n in range(5):
                        await client.post(f"/topics/jobs/{n}", content="again")
                assert check_topic.cache_info().currsize >= 4000
                assert routes.match.cache_info().currsize >= 5
                with disk.env.begin() as txn:  # read through the map, as loads do
                    assert sum(1 for _ in txn.cursor(disk.events)) == 4005
                mapped = _mapped_kib(data)
                assert mapped > 2048  # ~4 MiB of events
                cycle = _Cycle()
                collected = weakref.ref(cycle)
                del cycle
                await sleep_until(lambda: not server.hub._topics)
                await sleep_until(lambda: check_topic.cache_info().currsize == 0)
                assert routes.match.cache_info().currsize == 0
                await sleep_until(lambda: collected() is None)
                await sleep_until(lambda: _mapped_kib(data) < mapped / 8)
                # The pages were only unmapped: the store still reads back whole.
                with disk.env.begin() as txn:
                    assert sum(1 for _ in txn.cursor(disk.events)) == 4005
    finally:
        gc.enable()
