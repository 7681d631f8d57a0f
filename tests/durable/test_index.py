"""The topic index follows the log: events are read back whether or not they are indexed
yet, a crash before the index caught up loses nothing, and a failed commit leaves nothing
behind to index. The store's own files, no sockets."""

from __future__ import annotations

import threading
import time

import lmdb
import pytest
import trio
import trio.testing

from broker.core.items import PublishItem
from broker.engines import durable
from broker.engines.durable import INDEX_EVERY, TRIM_SLACK, DiskStore, JournalOptions
from broker.hub import open_hub
from broker.hub.events import Event


class Writer:
    """Events for a store, numbered as the hub would number them."""

    def __init__(self, origin: str, index: int) -> None:
        self.origin = origin
        self.index = index

    def events(self, topic: str, count: int, size: int = 10) -> list[Event]:
        out = []
        for _ in range(count):
            self.index += 1
            out.append(
                Event(
                    topic=topic,
                    event_type=None,
                    data=f"{topic}:{self.index}".ljust(size, "."),
                    is_json=False,
                    origin=self.origin,
                    seq=self.index,
                    index=self.index,
                    event_id=f"{self.origin}-{self.index}",
                    published_at=time.time(),
                )
            )
        return out


def topic_entries(disk: DiskStore, topic: str) -> int:
    assert disk.env is not None
    with disk.env.begin() as txn:
        cursor = txn.cursor(disk.by_topic)
        return cursor.count() if cursor.set_key(topic.encode()) else 0


def crash(disk: DiskStore) -> None:
    """Stop as a killed process would: no index catch-up, no clean-shutdown mark."""
    disk._close_env()
    disk._unlock()


def test_unindexed_events_are_read_back_and_a_crash_before_the_index_loses_none(tmp_path):
    options = JournalOptions(path=str(tmp_path / "data"), history_size=5)
    disk = DiskStore(options)
    recovered = disk.open()
    writer = Writer(recovered.origin, recovered.index)
    written = []
    for _ in range(12):  # 60 events to "a", 12 to "b": fewer than INDEX_EVERY
        group = writer.events("a", 5) + writer.events("b", 1)
        disk.write(group)
        written += group
    assert len(written) < INDEX_EVERY
    assert topic_entries(disk, "a") == 0  # nothing indexed yet ...
    loaded = {t.name: [e.data for e in t.events] for t in disk.load(["a", "b"])}
    # ... and yet read back: the newest history_size of each topic.
    assert loaded["a"] == [e.data for e in written if e.topic == "a"][-5:]
    assert loaded["b"] == [e.data for e in written if e.topic == "b"][-5:]

    crash(disk)
    disk = DiskStore(options)
    again = disk.open()
    try:
        assert again.origin == recovered.origin
        assert again.new_epoch is None
        assert again.index == written[-1].index
        assert again.vector[recovered.origin] == written[-1].seq
        assert disk._unindexed == []  # the start indexed what the crash left
        assert 5 <= topic_entries(disk, "a") <= 5 + TRIM_SLACK  # and trimmed it
        after = {t.name: [e.data for e in t.events] for t in disk.load(["a", "b"])}
        assert after == loaded
        evicted = {t.name: t.evicted for t in disk.load(["a"])}["a"]
        assert evicted[recovered.origin] >= [e for e in written if e.topic == "a"][-6].seq
    finally:
        disk.close()


def test_the_index_catches_up_every_index_every_events_while_running(tmp_path):
    disk = DiskStore(JournalOptions(path=str(tmp_path / "data"), history_size=10_000))
    recovered = disk.open()
    writer = Writer(recovered.origin, recovered.index)
    try:
        for _ in range(INDEX_EVERY // 16 + 1):
            disk.write(writer.events("t", 16))
        assert topic_entries(disk, "t") >= INDEX_EVERY
        assert len(disk._unindexed) < INDEX_EVERY
        (loaded,) = disk.load(["t"])
        assert len(loaded.events) == (INDEX_EVERY // 16 + 1) * 16
        assert [e.index for e in loaded.events] == sorted({e.index for e in loaded.events})
    finally:
        disk.close()


def test_a_failed_commit_leaves_nothing_to_index_or_read(tmp_path, monkeypatch):
    monkeypatch.setattr(durable, "MAP_SIZE", 1 << 20)  # a store that fills up at once
    disk = DiskStore(JournalOptions(path=str(tmp_path / "data")))
    recovered = disk.open()
    writer = Writer(recovered.origin, recovered.index)
    kept: list[Event] = []
    try:
        with pytest.raises(lmdb.MapFullError):
            for _ in range(100):
                group = writer.events("full", 1, size=64 * 1024)
                disk.write(group)
                kept += group
        assert kept, "at least one event fits"
        assert len(disk._unindexed) == len(kept)  # the failed group's entry is not there
        writer.index = kept[-1].index  # (the hub gives the failed ids again)
        (loaded,) = disk.load(["full"])
        assert [e.id for e in loaded.events] == [e.id for e in kept]
    finally:
        disk.close()


async def test_a_publisher_cancelled_while_its_group_commits_leaves_the_rest_alone(tmp_path):
    """The publisher goes away while its event waits for a commit: the event is still
    committed and delivered with its group; the next publish is answered as usual."""
    path = str(tmp_path / "data")
    holding, release = threading.Event(), threading.Event()
    with trio.fail_after(20):
        async with (
            durable.open_journal(JournalOptions(path=path)) as journal,
            open_hub(journal=journal) as hub,
        ):
            await hub.publish([PublishItem("t", "first")])
            disk = journal.disk
            assert disk.env is not None
            env = disk.env

            def forget_slowly(topic: str) -> bool:  # holds the write lock: commits wait
                with env.begin(write=True):
                    holding.set()
                    release.wait(5)
                return False

            disk.forget = forget_slowly  # type: ignore[method-assign]
            answered: list[str] = []

            async def publish(data: str) -> None:
                answered.extend(await hub.publish([PublishItem("t", data)]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal.forget, "other")
                assert await trio.to_thread.run_sync(holding.wait, 5)
                with trio.CancelScope() as gone:
                    async with trio.open_nursery() as waiting:
                        waiting.start_soon(publish, "abandoned")
                        waiting.start_soon(publish, "waited")
                        await trio.testing.wait_all_tasks_blocked()
                        gone.cancel()
                nursery.start_soon(publish, "kept")
                await trio.testing.wait_all_tasks_blocked()
                release.set()
            assert len(answered) == 1  # "kept"; the cancelled ones got no answer
            history = [e.data for e in hub._topics["t"].history.events]
            # (the two cancelled publishes started in one batch: trio picks their order)
            assert history[0] == "first"
            assert history[3] == "kept"
            assert sorted(history[1:3]) == ["abandoned", "waited"]
            assert (await hub.publish([PublishItem("t", "next")])) != answered
