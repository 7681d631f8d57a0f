"""What survives a restart and kill -9 on the durable default (real processes, real files)."""

from __future__ import annotations

import random
import signal

import httpx
import pytest
import trio

from broker.core import positions
from tests.durable.support import durable_broker, position, publish, replay
from tests.support.sse_client import open_sse


async def test_kill_9_under_publish_load_loses_nothing_and_reuses_no_id(tmp_path):
    """About 20 kill -9s while four publishers and a live subscriber run.

    After each restart: every acknowledged event is there with its id, every event a
    subscriber was sent is there (delivered only once committed), no id ever names two
    different events, and resuming from any id gives exactly the rest (``broker.start``).
    """
    rng = random.Random(19)
    broker = durable_broker(str(tmp_path / "data"))
    seen: dict[str, str] = {}  # id -> data, over every run
    acked: dict[str, str] = {}
    origin = None
    counter = 0
    with trio.fail_after(90):
        try:
            url = await broker.astart()
            began = trio.current_time()
            for kill in range(20):
                if kill >= 8 and trio.current_time() - began > 30:
                    break  # bounded: a busy machine starts a broker slowly
                delivered: list[tuple[str, str]] = []
                live = await open_sse(url, "/topics/load/events")

                async def read_live(live=live, delivered=delivered) -> None:
                    while (event := await live.next_event()) is not None:
                        if not (event.event or "").startswith("broker."):
                            delivered.append((event.id, event.data))

                async def publisher(client: httpx.AsyncClient, name: str, url: str = url) -> None:
                    nonlocal counter
                    while True:
                        counter += 1
                        data = f"{name}-{counter}"
                        try:
                            answer = await publish(client, url, "load", data)
                        except httpx.HTTPError:
                            return  # killed mid-request: not acknowledged
                        assert answer.status_code == 202, answer.text
                        acked[answer.json()["id"]] = data

                async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
                    nursery.start_soon(read_live)
                    for n in range(4):
                        nursery.start_soon(publisher, client, f"k{kill}p{n}")
                    await trio.sleep(rng.uniform(0.05, 0.4))
                    await broker.astop(signal.SIGKILL)
                    with trio.move_on_after(5):
                        while nursery.child_tasks:
                            await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()
                await live.aclose()
                url = await broker.astart()
                end = await position(url)
                if origin is None:
                    origin = end.split("-")[0]
                assert "." not in end, end  # the same id space: no new origin
                assert end.startswith(origin + "-"), end
                notice, events = await replay(url, "load", f"{origin}-0", end)
                assert notice.event == "broker.start", notice
                stored = {e.id: e.data for e in events}
                assert len(stored) == len(events)
                for event_id, data in {**acked, **dict(delivered)}.items():
                    assert stored.get(event_id) == data, (kill, event_id)
                for event_id, data in stored.items():
                    assert seen.setdefault(event_id, data) == data, (kill, event_id)
                seqs = [positions.parse_position(e.id)[origin] for e in events]
                assert seqs == sorted(seqs)
                assert len(set(seqs)) == len(seqs)
                if events:  # resume from a random id: exactly the rest
                    cut = rng.randrange(len(events))
                    notice, rest = await replay(url, "load", events[cut].id, end)
                    assert notice.event == "broker.start"
                    assert [e.id for e in rest] == [e.id for e in events[cut + 1 :]]
            assert len(acked) > 100
        finally:
            broker.kill()


async def test_restart_keeps_resume_retained_state_and_closed_topics(tmp_path):
    broker = durable_broker(str(tmp_path / "data"))
    with trio.fail_after(30):
        try:
            url = await broker.astart()
            async with httpx.AsyncClient() as client:
                ids = [
                    (await publish(client, url, "jobs/1", f"step {i}")).json()["id"]
                    for i in range(10)
                ]
                state = await publish(
                    client, url, "jobs/1", '{"pct": 90}', retain="1", event="progress"
                )
                final = (await publish(client, url, "jobs/2", "done", final="1")).json()["id"]
            end = await position(url)
            url = await broker.arestart()
            assert await position(url) == end  # same origin, same position: no new epoch
            notice, events = await replay(url, "jobs/1", ids[3], state.json()["id"])
            assert notice.event == "broker.start"
            assert notice.json()["resumed"] is True
            assert [e.data for e in events] == [f"step {i}" for i in range(4, 10)] + ['{"pct": 90}']
            fresh = await open_sse(url, "/topics/jobs/1/events")
            first = await fresh.events(1)
            await fresh.aclose()
            assert first[0].event == "progress"
            assert first[0].json() == {"pct": 90}
            async with httpx.AsyncClient() as client:
                over = await client.get(
                    f"{url}/topics/jobs/2/events", headers={"Last-Event-ID": final}
                )
                assert over.status_code == 204  # the client has the final event
                refused = await publish(client, url, "jobs/2", "again")
                assert refused.status_code == 409
                answer = await publish(client, url, "jobs/1", "after")
                assert answer.json()["id"] == f"{end.split('-')[0]}-{positions.to_base36(13)}"
        finally:
            broker.kill()


async def test_a_changed_boot_id_starts_a_new_epoch_and_past_the_tail_is_a_reset(tmp_path):
    """An operating-system crash in "process" mode: the tail may be gone, no id is reused."""
    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    broker = durable_broker(str(tmp_path / "data"), BROKER_STORAGE_BOOT_ID_FILE=str(boot))
    with trio.fail_after(30):
        try:
            url = await broker.astart()
            async with httpx.AsyncClient() as client:
                for i in range(3):
                    await publish(client, url, "t", f"e{i}")
            old = await position(url)
            await broker.astop(signal.SIGKILL)
            # Clean restarts and kill -9 within one boot keep the origin ...
            url = await broker.astart()
            assert await position(url) == old
            await broker.astop(signal.SIGKILL)
            boot.write_text("boot-2\n")  # ... an unclean stop across a reboot does not
            url = await broker.astart()
            new = await position(url)
            assert new != old
            assert old in new.split(".")
            async with httpx.AsyncClient() as client:
                answer = await publish(client, url, "t", "after")
            new_origin = (set(answer.json()["id"].split(".")) - {old}).pop().split("-")[0]
            assert new_origin != old.split("-")[0]
            # A client that saw an event past what survived gets broker.reset ("lost").
            past = f"{old.split('-')[0]}-{positions.to_base36(4)}"
            stream = await open_sse(url, "/topics/t/events", {"Last-Event-ID": past})
            notice = await stream.next_event()
            await stream.aclose()
            assert notice.event == "broker.reset"
            assert notice.json()["reason"] == "lost"
            # One at the durable tail resumes exactly.
            _, events = await replay(url, "t", old, answer.json()["id"])
            assert [e.data for e in events] == ["after"]
        finally:
            broker.kill()


async def test_a_truncated_store_is_moved_aside_with_one_log_line(tmp_path):
    data = tmp_path / "data"
    broker = durable_broker(str(data))
    with trio.fail_after(30):
        try:
            url = await broker.astart()
            async with httpx.AsyncClient() as client:
                for i in range(200):
                    await publish(client, url, f"t{i % 7}", "x" * 200)
            old = await position(url)
            await broker.astop()
            store = data / "data.mdb"
            store.write_bytes(store.read_bytes()[: 3 * 4096])  # a torn tail
            url = await broker.astart()
            assert await position(url) != old  # a new epoch
            assert any("truncated" in line and "moved to" in line for line in broker.log)
            assert list(tmp_path.glob("data.damaged-*"))
            async with httpx.AsyncClient() as client:
                assert (await publish(client, url, "t1", "again")).status_code == 202
            # Garbage where the metadata was: the same, never a crash loop.
            await broker.astop()
            store.write_bytes(b"\xff" * 8192)
            url = await broker.astart()
            async with httpx.AsyncClient() as client:
                assert (await publish(client, url, "t1", "again")).status_code == 202
        finally:
            broker.kill()


@pytest.mark.parametrize("durability", ["fsync"])
async def test_fsync_durability_keeps_events_too(tmp_path, durability):
    broker = durable_broker(str(tmp_path / "data"), BROKER_STORAGE_DURABILITY=durability)
    with trio.fail_after(30):
        try:
            url = await broker.astart()
            async with httpx.AsyncClient() as client:
                ids = [(await publish(client, url, "f", f"e{i}")).json()["id"] for i in range(5)]
            await broker.astop(signal.SIGKILL)
            url = await broker.astart()
            _, events = await replay(url, "f", ids[0], ids[-1])
            assert [e.id for e in events] == ids[1:]
        finally:
            broker.kill()


async def test_a_second_broker_on_the_same_store_stops_with_one_line(tmp_path):
    first = durable_broker(str(tmp_path / "data"))
    second = durable_broker(str(tmp_path / "data"))
    with trio.fail_after(30):
        try:
            await first.astart()
            with pytest.raises(RuntimeError, match="another broker is using this store"):
                await second.astart()
            assert second.proc.wait(10) == 2
        finally:
            first.kill()
            second.kill()


async def test_a_damaged_record_after_a_crash_keeps_every_other_event(tmp_path):
    """The check reads every record after an unclean stop; what reads back is salvaged."""
    import lmdb

    data = tmp_path / "data"
    broker = durable_broker(str(data))
    with trio.fail_after(30):
        try:
            url = await broker.astart()
            async with httpx.AsyncClient() as client:
                ids = [(await publish(client, url, "t", f"e{i}")).json()["id"] for i in range(50)]
            await broker.astop(signal.SIGKILL)
            env = lmdb.open(str(data), max_dbs=8, map_size=1 << 40)
            events = env.open_db(b"events")
            with env.begin(write=True) as txn:
                cursor = txn.cursor(events)
                assert cursor.last()
                txn.put(cursor.key(), b"\xc1 scribbled", db=events)  # 0xc1: never msgpack
            env.close()
            url = await broker.astart()
            assert any("49 events that could still be read" in line for line in broker.log)
            old = ids[0].split("-")[0]
            assert (await position(url)).count(".") == 1  # the old origin and a new one
            notice, events = await replay(url, "t", ids[0], ids[48])
            assert notice.event == "broker.start"
            assert [e.data for e in events] == [f"e{i}" for i in range(1, 49)]
            stream = await open_sse(url, "/topics/t/events", {"Last-Event-ID": ids[49]})
            notice = await stream.next_event()
            await stream.aclose()
            assert notice.event == "broker.reset"  # it saw e49, which is gone
            assert notice.json()["reason"] == "lost"
            async with httpx.AsyncClient() as client:
                answer = await publish(client, url, "t", "after")
            vector = positions.parse_position(answer.json()["id"])
            assert vector.pop(old) == 49  # the old origin stays retired at what survived
            assert list(vector.values()) == [1]  # the new one counts from 1
        finally:
            broker.kill()
