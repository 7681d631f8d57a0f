"""What the cyclic garbage collector walks: not the events the durable store reads back
(they cannot be in a cycle, and whole histories of them made every pass a stall of the
loop), and not the start's own heap once the broker listens. Measured in
``python -m load.durable --stall``."""

from __future__ import annotations

import gc
import sys
import time

from broker.cli import freeze_startup_heap
from broker.engines.durable import DiskStore, JournalOptions
from broker.hub.events import Event, uncollected


def test_an_uncollected_event_is_still_freed_and_still_encodes():
    event = uncollected(
        Event(
            topic="t", event_type="kind", data="x" * 50, is_json=False, origin="o", seq=1,
            index=1, event_id="o-1", published_at=0.0,
        )
    )  # fmt: skip
    assert not gc.is_tracked(event)
    assert event.ws_text()  # (its wire forms are still built and kept on it)
    data = event.data
    before = sys.getrefcount(data)
    del event  # freed by its reference count: its data loses a reference
    assert sys.getrefcount(data) == before - 1


def test_events_read_back_from_the_store_are_not_walked(tmp_path):
    disk = DiskStore(JournalOptions(path=str(tmp_path / "data")))
    origin = disk.open().origin
    try:
        disk.write(
            [
                Event(
                    topic="t", event_type=None, data=f"e{n}", is_json=False, origin=origin,
                    seq=n, index=n, event_id=f"{origin}-{n}", published_at=time.time(),
                )
                for n in range(1, 101)
            ]
        )  # fmt: skip
        (loaded,) = disk.load(["t"])
        assert len(loaded.events) == 100
        assert not any(gc.is_tracked(event) for event in loaded.events)
    finally:
        disk.close()


def test_freezing_the_startup_heap_leaves_it_out_of_later_passes():
    gc.unfreeze()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # (modules, classes, functions: the start)
        assert sum(len(gc.get_objects(g)) for g in range(3)) < gc.get_freeze_count()
    finally:
        gc.unfreeze()
