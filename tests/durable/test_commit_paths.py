"""Where a group commit runs: in the Trio loop (small groups, ``process`` mode) or in the
writer thread (``fsync``, big groups, while the thread holds LMDB's write lock); every path
keeps what it acknowledged."""

from __future__ import annotations

import threading
import time

import pytest
import trio
import trio.testing

from broker.core.items import PublishItem
from broker.engines.durable import (
    LOOP_COMMIT_CHARS,
    LOOP_COMMIT_EVENTS,
    DiskStore,
    JournalOptions,
    open_journal,
)
from broker.hub import open_hub


def stored(path: str, topic: str) -> dict[str, str]:
    """The events of ``topic`` in the store at ``path`` (the journal closed), id -> data."""
    disk = DiskStore(JournalOptions(path=path, history_size=10_000))
    disk.open()
    try:
        (loaded,) = disk.load([topic])
        return {event.id: event.data for event in loaded.events}
    finally:
        disk.close()


@pytest.mark.parametrize("durability", ["process", "fsync"])
async def test_small_groups_commit_in_the_loop_big_ones_in_the_thread_and_all_are_kept(
    tmp_path, durability
):
    path = str(tmp_path / "data")
    options = JournalOptions(path=path, durability=durability, history_size=10_000)
    published: dict[str, str] = {}
    with trio.fail_after(20):
        async with open_journal(options) as journal, open_hub(journal=journal) as hub:
            groups = [
                [PublishItem("t", "small")],
                [PublishItem("t", f"many {i}") for i in range(LOOP_COMMIT_EVENTS + 1)],
                [PublishItem("t", "x" * (LOOP_COMMIT_CHARS + 1))],
                [PublishItem("t", "small again")],
            ]
            for items in groups:
                ids = await hub.publish(items)
                published.update(zip(ids, (item.data for item in items), strict=True))
                # Acknowledged: committed, and delivered once committed.
                assert journal.committed_events == hub.published == len(published)
            stats = journal.statistics()
            assert stats.commits == 4
            # fsync mode never commits in the loop; process mode only the small groups.
            assert stats.loop_commits == (2 if durability == "process" else 0)
    assert stored(path, "t") == published


async def test_the_loop_never_waits_for_the_writer_threads_write_lock(tmp_path):
    """While the writer thread holds a write transaction (a sweep, a forget), a publish is
    committed after it in that thread; the loop goes on meanwhile."""
    path = str(tmp_path / "data")
    holding, release = threading.Event(), threading.Event()
    with trio.fail_after(20):
        async with (
            open_journal(JournalOptions(path=path)) as journal,
            open_hub(journal=journal) as hub,
        ):
            first = await hub.publish([PublishItem("t", "before")])  # "t" now in memory
            disk = journal.disk
            assert disk.env is not None
            env = disk.env

            def forget_slowly(topic: str) -> bool:  # holds LMDB's one write lock
                with env.begin(write=True):
                    holding.set()
                    release.wait(5)  # (bounded: without the fix the loop would wait here)
                return False

            disk.forget = forget_slowly  # type: ignore[method-assign]
            done: list[str] = []

            async def publish() -> None:
                done.extend(await hub.publish([PublishItem("t", "during")]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal.forget, "other")
                assert await trio.to_thread.run_sync(holding.wait, 5)
                began = time.monotonic()
                nursery.start_soon(publish)
                await trio.testing.wait_all_tasks_blocked()
                assert time.monotonic() - began < 2  # the loop was not held on the lock
                assert not done  # queued behind the write that holds the lock
                release.set()
            assert len(done) == 1
            assert journal.statistics().loop_commits == 1  # "before"; "during" in the thread
            ids = await hub.publish([PublishItem("t", "after")])
            assert journal.statistics().loop_commits == 2  # the thread is idle again
    assert stored(path, "t") == {first[0]: "before", done[0]: "during", ids[0]: "after"}
