"""What the cyclic garbage collector walks: events never (they cannot be in a cycle, and
whole histories of them made every pass a stall of the loop); the start's own heap not
after the start. Measured in ``python -m load.durable --stall``."""

from __future__ import annotations

import gc
import sys

from broker.cli import freeze_startup_heap
from broker.core.items import PublishItem
from broker.hub import open_hub
from broker.hub.events import Event


def test_an_event_is_left_out_of_the_collector_and_still_freed():
    event = Event(
        topic="t", event_type="kind", data="x" * 50, is_json=False, origin="o", seq=1,
        index=1, event_id="o-1", published_at=0.0,
    )  # fmt: skip
    assert not gc.is_tracked(event)
    assert event.ws_text()  # (its wire forms are still built and kept on it)
    assert not gc.is_tracked(event)
    data = event.data
    before = sys.getrefcount(data)
    del event  # freed by its reference count: its data loses a reference
    assert sys.getrefcount(data) == before - 1


async def test_a_topics_history_adds_nothing_for_the_collector_to_walk():
    async with open_hub(history_size=1000) as hub:
        items = [PublishItem("t", f"e{n}") for n in range(10)]
        for _ in range(100):
            await hub.publish(items)
        assert len(hub._topics["t"].history.events) == 1000
        walked = [o for o in gc.get_objects() if isinstance(o, Event)]
        assert walked == []


def test_freezing_the_startup_heap_leaves_it_out_of_later_passes():
    gc.unfreeze()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # (modules, classes, functions: the start)
        assert sum(len(gc.get_objects(g)) for g in range(3)) < gc.get_freeze_count()
    finally:
        gc.unfreeze()
