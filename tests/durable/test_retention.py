"""Store-wide retention: by bytes (oldest first) and by age, reported as ``evicted``."""

from __future__ import annotations

import httpx
import trio

from tests.durable.support import replay, sleep_until
from tests.support.servers import open_broker_server


async def test_the_store_keeps_under_max_bytes_oldest_first(tmp_path):
    tables = {
        "storage": {
            "kind": "durable",
            "path": str(tmp_path / "data"),
            "max_bytes": 256 * 1024,
            "sweep_seconds": 0.05,
        },
    }
    with trio.fail_after(30):
        async with open_broker_server(**tables) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                ids = []
                for n in range(40):  # 40 x 25 events of ~1 KiB: ~1 MiB in all
                    events = [
                        {"topic": f"t{n % 4}", "data": f"{n}-{k}-" + "x" * 1000} for k in range(25)
                    ]
                    answer = await client.post("/publish", json={"events": events})
                    ids += answer.json()["ids"]
            disk = server.hub.journal.disk
            await sleep_until(lambda: disk.bytes_used() <= 256 * 1024, timeout=20)
            with disk.env.begin() as txn:
                kept = txn.stat(disk.events)["entries"]
            assert 0 < kept < 1000
        async with open_broker_server(**tables) as server:
            # The oldest went first: a resume from the first id is told (evicted) ...
            notice, events = await replay(server.url, "t0", ids[0], ids[36 * 25 + 24])
            assert notice.event == "broker.reset"
            assert notice.json()["reason"] == "evicted"
            assert events
            assert all(not e.data.startswith("0-") for e in events)
            # ... and the newest are all there.
            assert events[-1].data.startswith("36-24-")


async def test_events_older_than_max_age_leave_the_store(tmp_path):
    tables = {
        "storage": {
            "kind": "durable",
            "path": str(tmp_path / "data"),
            "max_age_seconds": 0.5,
            "sweep_seconds": 0.05,
        },
    }
    with trio.fail_after(30):
        async with open_broker_server(**tables) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                first = (await client.post("/topics/a", content="old")).json()["id"]
                disk = server.hub.journal.disk

                def stored() -> int:
                    with disk.env.begin() as txn:
                        return txn.stat(disk.events)["entries"]

                await sleep_until(lambda: stored() == 0, timeout=10)
                last = (await client.post("/topics/a", content="new")).json()["id"]
        async with open_broker_server(**tables) as server:
            notice, events = await replay(server.url, "a", first, last)
            assert notice.event == "broker.start"  # "old" is gone, but the client had it
            assert [e.data for e in events] == ["new"]
            notice, events = await replay(server.url, "a", first.split("-")[0] + "-0", last)
            assert notice.event == "broker.reset"
            assert notice.json()["reason"] == "evicted"


async def test_retained_and_closed_state_leave_after_their_ttl_not_before(tmp_path):
    def tables(ttl: float) -> dict[str, dict[str, object]]:
        storage = {"kind": "durable", "path": str(tmp_path / "data"), "sweep_seconds": 0.05}
        return {"storage": {**storage, "closed_ttl_seconds": ttl}}

    with trio.fail_after(30):
        async with open_broker_server(**tables(3600)) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                await client.post("/topics/done?final=1", content="end")
                await client.post("/topics/state?retain=1", content="kept")
                for n in range(5):  # history retention does not touch them
                    await client.post("/topics/state", content=f"n{n}")
        async with open_broker_server(**tables(3600)) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/topics/done", content="x")).status_code == 409
        async with open_broker_server(**tables(0.2)) as server:
            disk = server.hub.journal.disk

            def kept() -> int:
                with disk.env.begin() as txn:
                    return txn.stat(disk.retained)["entries"] + txn.stat(disk.final)["entries"]

            await sleep_until(lambda: kept() == 0, timeout=10)
        async with open_broker_server(**tables(0.2)) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/topics/done", content="x")).status_code == 202
