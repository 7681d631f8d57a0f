"""The hub with a store (the Redis engine's side of the interface), without Redis or sockets.

A fake store stands in for the engine: these tests pin what the hub promises any store —
each event is encoded once per node for its single-topic subscribers and once per topic
set for the others, delivery has no checkpoint, and notices move no one.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from broker.engines.redis import entries, ids
from broker.engines.redis.cache import TopicCache, plan_start, variant_id
from broker.hub import Hub, NotSupported, PublishItem
from broker.hub.events import Event
from tests.core.test_hub import MemorySink, events_in, make_subscriber


class FakeStore:
    """Keeps caches like the engine does; publishing stores into them directly."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.caches: dict[str, TopicCache] = {}
        self.now = 1_795_600_000_000

    def cache(self, topic: str) -> TopicCache:
        cache = self.caches.get(topic)
        if cache is None:
            cache = self.caches[topic] = TopicCache(topic, 100)
            cache.load([], from_start=True)
            cache.ready = True
        return cache

    async def append(self, items, *, retain=False, final=False):
        out = []
        for item in items:
            self.now += 1
            cache = self.cache(item.topic)
            event = entries.event_from_fields(
                item.topic,
                cache.tag,
                f"{self.now}-0",
                {"f": "0", "t": str(self.now), "e": item.event_type or "", "d": item.data},
            )
            cache.append(event, 0.0)
            self.hub.deliver_stored(event)
            out.append(event.id)
        return out

    async def prepare(self, topics, resume_from, start_at):
        for topic in topics:
            self.cache(topic)

    def plan_start(self, topics, states, resume_from, start_at):
        return plan_start(
            {t: self.cache(t) for t in topics}, states, resume_from=resume_from, start_at=start_at
        )

    def stream_is_over(self, topics, states, resume_from):
        return False

    def track_nowait(self, topics):
        for topic in topics:
            self.cache(topic)

    def variant_id(self, topics):
        return variant_id(sorted(topics), self.caches)

    async def clear_retained(self, topic, event_type=...):
        return 0

    async def forget(self, topic):
        return False


async def test_frames_are_encoded_once_per_topic_set_and_delivery_has_no_checkpoint(
    monkeypatch,
):
    hub = Hub()
    store = hub.store = FakeStore(hub)
    copies = []
    with_id = Event.with_id

    def counting_with_id(self, event_id):
        copies.append(event_id)
        return with_id(self, event_id)

    monkeypatch.setattr(Event, "with_id", counting_with_id)
    async with trio.open_nursery() as nursery:
        sinks = [MemorySink() for _ in range(4)]
        subs = [make_subscriber(nursery, s) for s in sinks]
        for topics in (["a"], ["a"], ["a", "b"], ["b", "a"]):
            await hub.prepare(topics, resume_from=None)
        with (
            hub.subscribe(subs[0], ["a"]),
            hub.subscribe(subs[1], ["a"]),
            hub.subscribe(subs[2], ["a", "b"]),
            hub.subscribe(subs[3], ["b", "a"]),
        ):
            cache = store.cache("a")
            event = entries.event_from_fields(
                "a", cache.tag, "1795600000001-0", {"f": "0", "t": "0", "e": "", "d": "hi"}
            )
            cache.append(event, 0.0)
            with trio.testing.assert_no_checkpoints():
                hub.deliver_stored(event)
            # one copy for the topic set {a, b}, none for the single-topic subscribers
            assert copies == [ids.format_positions({"a": event.seq, "b": ids.ZERO})]
            last = [events_in(s.written)[-1] for s in sinks]  # after each broker.start
            assert last[0] == last[1] == event.sse.rstrip(b"\n")
            assert last[2] == last[3]
            assert last[2].startswith(f"id: {copies[0]}\n".encode())


async def test_notices_from_the_store_move_no_one():
    hub = Hub()
    store = hub.store = FakeStore(hub)
    async with trio.open_nursery() as nursery:
        sink = MemorySink()
        sub = make_subscriber(nursery, sink)
        await hub.prepare(["n"], resume_from=None)
        with hub.subscribe(sub, ["n"]):
            await store.append([PublishItem("n", "1")])
            position = sub.position
            hub.notify(None, "broker.degraded", {"reason": "store unreachable"})
            hub.notify("n", "broker.reset", {"reason": "unknown"}, ("position", "requested"))
            assert sub.position == position
            text = bytes(sink.written).decode()
            assert f'"position":"{position}"' in text
            assert f'"requested":"{position}"' in text


async def test_a_synchronous_publish_is_refused_with_a_store():
    hub = Hub()
    hub.store = FakeStore(hub)
    with pytest.raises(NotSupported):
        hub.publish_nowait("t", "x")
    assert not hub.synchronous
    assert await hub.publish([PublishItem("t", "x")])  # the engine-neutral entry point


async def test_the_memory_engine_publishes_through_the_same_entry_point():
    hub = Hub()
    assert hub.synchronous
    ids_ = await hub.publish([PublishItem("t", "1"), PublishItem("u", "2")])
    assert len(ids_) == 2
    assert hub.statistics().published == 2
