"""Following topics live: announcements, range reads on a gap, and letting topics go.

A node follows a topic only while it has local subscribers for it (the topic is
*tracked*). It subscribes to the topic's notification channel; each message carries one
stored event and the id of the entry before it (``entries.py``). If that predecessor is
this node's last entry of the topic, the event is delivered straight from the message;
otherwise (a message missed, a catch-up pending, Redis restarted) the topic is marked and
the reader task reads the stream from its last entry (``XRANGE key <last> +``,
inclusive, so it also learns whether the stream still holds it), all marked topics in one
pipelined round trip. Either way each entry becomes one :class:`~broker.hub.events.Event`
handed to :meth:`Hub.deliver_stored`. If a stream no longer holds a node's last entry,
that topic's subscribers get ``broker.reset`` in-band. The sweep stops following topics
without local subscribers after ``idle_topic_seconds``.

Why messages plus range reads, not a blocking ``XREAD``: measured with
``tests/redis/measure_live_read.py`` (README "Cluster on Redis"), taking the event from
the message costs about half the reader CPU of a blocking ``XREAD`` loop and less Redis
CPU, with lower latency, because no command is sent per event. A blocking ``XREAD``
would also have to be re-issued whenever the set of tracked topics changes, and on Redis
Cluster one command cannot name keys of different slots (a connection per topic);
channels are added and removed on one connection without interrupting it, and
``SSUBSCRIBE`` keeps each topic's messages on its shard.

Fault isolation: a message's handling and each round of the reader run under
:func:`~broker.core.guard.guard` (``where="redis"``). An unexpected exception there (an entry
no broker wrote, say) is logged and counted; that message is dropped (its topic is read
instead) or that round is given up, and the reader goes on with the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from ...core.guard import guard
from . import cache as caching
from . import entries, ids
from .base import EngineBase
from .cache import TopicCache
from .connection import FAILURES

log = logging.getLogger(__name__)


class Following(EngineBase):
    """The live read of every tracked topic."""

    def _on_message(self, message: Mapping[str, Any]) -> None:
        """A topic's notification (see module docstring). Never blocks, never raises."""
        self.messages += 1
        with guard(self.hub.faults, "redis", f"{self} message") as fault:
            self._follow_message(message)
        if fault:
            self._ring(self._topic_of(str(message.get("channel", ""))))

    def _follow_message(self, message: Mapping[str, Any]) -> None:
        topic = self._topic_of(message["channel"])
        cache = self.caches.get(topic)
        if cache is None:
            return
        data = message["data"]
        if data == entries.META_CHANGED:
            self._meta_dirty.add(topic)
            self._ring(topic)
            return
        try:
            previous, event = entries.parse_message(topic, cache.tag, data)
        except ValueError:
            self.gap_reads += 1
            self._ring(topic)
            return
        if (
            cache.ready
            and previous == cache.last
            and topic not in self._dirty
            and topic not in self._reading
        ):
            cache.append(event, trio.current_time())
            self.delivered_from_messages += 1
            self.hub.deliver_stored(event)
        elif not cache.holds(event.seq):  # not a repeat of what a read delivered
            self.gap_reads += 1
            self._ring(topic)

    def _ring(self, topic: str) -> None:
        """Have the reader read ``topic`` from its last entry."""
        self._dirty.add(topic)
        self._wake.set()

    async def _reader_task(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if not self.healthy:
                continue  # the supervisor reads every tracked topic once Redis is back
            dirty, self._dirty = self._dirty, set()
            reload, self._meta_dirty = self._meta_dirty, set()
            topics = [t for t in dirty if (c := self.caches.get(t)) is not None and c.ready]
            with guard(self.hub.faults, "redis", f"{self} reader"):
                try:
                    await self._reload_meta([t for t in reload if t in self.caches])
                    if topics:
                        await self._read(topics)
                except FAILURES as exc:
                    self._failed(exc)

    async def _reload_meta(self, topics: Sequence[str]) -> None:
        for topic in topics:
            with trio.fail_after(self.options.timeout_seconds):
                meta = await self.client.hgetall(self._meta(topic))
            cache = self.caches.get(topic)
            if cache is not None:
                retained, final = entries.meta_events(topic, cache.tag, meta or {})
                self.hub.load_topic_state(topic, retained, final)

    async def _read(self, topics: Sequence[str]) -> None:
        """Read each topic from its last entry on, deliver what is new, in stream order."""
        async with self._read_lock:
            pending = list(topics)
            batch = self.options.read_batch
            while pending:
                shards = self.shards
                targets = [
                    (topic, cache, cache.last)
                    for topic in pending
                    if (cache := self.caches.get(topic)) is not None
                    and cache.ready
                    and not (shards is not None and shards.is_down(self._stream(topic)))
                ]
                if not targets:
                    return
                self._reading.update(topic for topic, _, _ in targets)
                lost_meta = []
                try:
                    results = await self._read_round(targets, batch)
                    self.reads += 1
                    pending = []
                    now = trio.current_time()
                    for (topic, cache, last), found in zip(targets, results, strict=True):
                        if self.caches.get(topic) is not cache or cache.last != last:
                            continue
                        found = found or ()
                        self.entries_read += len(found)
                        events = [self._event(cache, entry) for entry in found]
                        new, lost = caching.split_read(last, events)
                        if lost:
                            self._lost(cache, last, new)
                            lost_meta.append(topic)
                        for event in new:
                            cache.append(event, now)
                            self.hub.deliver_stored(event)
                        if len(found) >= batch:
                            pending.append(topic)
                finally:
                    # Until here no message may be delivered around this read's entries.
                    self._reading.difference_update(topic for topic, _, _ in targets)
                await self._reload_meta(lost_meta)

    async def _read_round(
        self, targets: list[tuple[str, TopicCache, int]], batch: int
    ) -> list[Any]:
        """One pipelined round trip: each target topic from its last entry on."""
        with trio.fail_after(self.options.timeout_seconds):
            async with self.client.pipeline(transaction=False) as pipe:
                requests = [
                    pipe.xrange(
                        self._stream(topic), ids.unpack(last) if last else "-", "+", count=batch
                    )
                    for topic, _, last in targets
                ]
            return [await request for request in requests]

    def _lost(self, cache: TopicCache, last: int, new: Sequence[Any]) -> None:
        """The stream no longer holds this node's last entry: tell the topic's subscribers."""
        self.resets += 1
        reason = "evicted" if new and new[0].seq > last else "unknown"
        log.warning(
            "%s: stream of %r no longer holds %s (%s); its subscribers are told",
            self,
            cache.topic,
            ids.unpack(last),
            reason,
        )
        cache.reset()
        self.hub.notify(
            cache.topic,
            "broker.reset",
            {"topic": cache.topic, "reason": reason},
            position_keys=("position", "requested"),
        )

    async def _sweep_task(self) -> None:
        """Stop following topics that had no local subscriber for ``idle_topic_seconds``."""
        linger = self.options.idle_topic_seconds
        while True:
            await trio.sleep(max(0.05, linger / 2))
            now = trio.current_time()
            idle = []
            for topic, cache in self.caches.items():
                if not cache.ready or self.hub.has_subscribers(topic) or cache.pinned_until > now:
                    cache.idle_since = None
                elif cache.idle_since is None:
                    cache.idle_since = now
                elif now - cache.idle_since >= linger:
                    idle.append(topic)
            for topic in idle:
                del self.caches[topic]
                self.hub.drop_topic(topic)
            pubsub = self._pubsub
            if idle and pubsub is not None:
                try:
                    with trio.move_on_after(self.options.timeout_seconds):
                        await pubsub.unsubscribe(*[self._stream(t) for t in idle])
                except FAILURES as exc:
                    self._failed(exc)
