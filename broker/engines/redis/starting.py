"""Starting a stream on Redis: following its topics and reading what the start needs.

:meth:`Starting.prepare` makes sure each topic is tracked (its channel subscribed, its
tail loaded into this node's cache, ``cache.py``) and that the cache reaches back to the
client's position, reading the stream where it does not; :meth:`Starting.plan_start`
then plans from the cache without a checkpoint. A prepared cache is pinned for
:data:`PIN_SECONDS` so the sweep does not drop it before the start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import trio
from coredis.exceptions import ResponseError

from ...core.errors import BadEventId
from ...hub import Unavailable
from ...hub.replay import StartAt, StartPlan
from . import cache as caching
from . import entries, ids
from .base import EngineBase
from .cache import TopicCache
from .connection import FAILURES

#: A stream start may take this long between :meth:`prepare` and the plan before the
#: cache it prepared may be trimmed.
PIN_SECONDS: Final = 30.0


class Starting(EngineBase):
    """Tracking topics and planning stream starts from this node's caches."""

    async def prepare(
        self, topics: frozenset[str], resume_from: str | None, start_at: StartAt | None
    ) -> None:
        """Track ``topics`` and read what a stream start from ``resume_from`` needs.

        Raises:
            Unavailable: Redis is unreachable (the stream cannot start now).
        """
        if not topics:
            return
        self._check(topics)
        requested: dict[str, int] = {}
        if resume_from is not None:
            try:
                requested, _ = ids.requested_positions(topics, ids.parse_position(resume_from))
            except BadEventId:
                pass
        history = (
            resume_from is None
            and start_at is not None
            and (start_at.last is not None or start_at.since is not None)
        )
        try:
            with trio.fail_after(self.options.timeout_seconds * 3):
                await self._track([t for t in topics if t not in self.caches], requested, history)
                for topic in sorted(topics):
                    loading = self._loading.get(topic)
                    if loading is not None:
                        await loading.wait()
                    cache = self.caches.get(topic)
                    if cache is None or not cache.ready:
                        raise self._unavailable()
                    cache.pinned_until = trio.current_time() + PIN_SECONDS
                    if topic in requested:
                        await self._reach(cache, requested[topic])
                    elif history:
                        await self._reach_history(cache)
        except FAILURES as exc:
            self._failed(exc)
            raise self._unavailable() from None

    def plan_start(
        self,
        topics: frozenset[str],
        states: Mapping[str, Any],
        resume_from: str | None,
        start_at: StartAt | None,
    ) -> StartPlan:
        ready = {t: c for t in topics if (c := self.caches.get(t)) is not None and c.ready}
        for cache in ready.values():
            cache.pinned_until = 0.0  # the start it was prepared for is happening now
        missing = [t for t in topics if t not in ready]
        if missing:  # a start that was not prepared: follow them from now on
            self.track_nowait(missing)
        return caching.plan_start(ready, states, resume_from=resume_from, start_at=start_at)

    def stream_is_over(
        self, topics: Sequence[str], states: Mapping[str, Any], resume_from: str
    ) -> bool:
        return caching.has_everything(topics, states, resume_from)

    def variant_id(self, topics: frozenset[str]) -> str:
        order = self._sorted.get(topics)
        if order is None:
            if len(self._sorted) > 10_000:
                self._sorted.clear()
            order = self._sorted[topics] = tuple(sorted(topics))
        return caching.variant_id(order, self.caches)

    def track_nowait(self, topics: Iterable[str]) -> None:
        shards = self.shards
        new = [
            t
            for t in topics
            if t not in self.caches
            and t not in self._loading
            and not (shards is not None and shards.is_down(self._stream(t)))
        ]
        if new and self._nursery is not None:
            self._nursery.start_soon(self._track_task, new)

    async def _track_task(self, topics: list[str]) -> None:
        try:
            with trio.fail_after(self.options.timeout_seconds * 3):
                await self._track([t for t in topics if t not in self.caches], {}, False)
        except FAILURES as exc:
            self._failed(exc)
        except Unavailable:
            pass

    async def _track(self, topics: list[str], requested: Mapping[str, int], history: bool) -> None:
        """Start following ``topics``: subscribe to their channels, then load their tails."""
        if not topics:
            return
        pubsub = self._pubsub
        if pubsub is None:
            raise self._unavailable()
        self._check(topics)  # the session's pubsub has no connection to a shard that is down
        for topic in topics:
            self.caches[topic] = TopicCache(topic, self.options.history_size)
            self._loading[topic] = trio.Event()
        try:
            await pubsub.subscribe(**{self._stream(t): self._on_message for t in topics})
            for topic in topics:
                cache = self.caches[topic]
                if topic in requested:
                    await self._load_from(cache, requested[topic])
                else:
                    await self._load_tail(cache, self.options.history_size + 1 if history else 1)
                meta = await self.client.hgetall(self._meta(topic))
                retained, final = entries.meta_events(topic, cache.tag, meta or {})
                self.hub.load_topic_state(topic, retained, final)
                cache.ready = True
                self._ring(topic)  # what was stored while the tail was being read
        except BaseException:
            for topic in topics:
                leftover = self.caches.get(topic)
                if leftover is not None and not leftover.ready:
                    del self.caches[topic]
            raise
        finally:
            for topic in topics:
                self._loading.pop(topic).set()

    async def _load_tail(self, cache: TopicCache, count: int) -> None:
        newest = await self.client.xrevrange(self._stream(cache.topic), "+", "-", count=count)
        events = [self._event(cache, e) for e in reversed(newest or ())]
        cache.load(events, from_start=not events)

    async def _load_from(self, cache: TopicCache, position: int) -> None:
        start = ids.unpack(position) if position else "-"
        events = await self._range(cache, start, "+")
        if not events:  # nothing at or after it: the cache starts at the stream's tail
            await self._load_tail(cache, 1)
            return
        from_start = await self._from_start(cache.topic) if position == ids.ZERO else False
        cache.load(events, from_start=from_start)

    async def _reach(self, cache: TopicCache, position: int) -> None:
        """Make the cache reach back to ``position`` (or learn the stream lost it)."""
        if cache.covers(position):
            return
        if position > cache.last:  # the client saw more than this node read: catch up
            await self._read([cache.topic])
            return
        if cache.ids:
            oldest = cache.ids[0]
            start = ids.unpack(position) if position else "-"
            older = await self._range(cache, start, ids.unpack(oldest))
            from_start = await self._from_start(cache.topic) if position == ids.ZERO else False
            if cache.ids and cache.ids[0] == oldest:
                cache.prepend(older, from_start=from_start)

    async def _reach_history(self, cache: TopicCache) -> None:
        if cache.from_start or len(cache) > self.options.history_size or not cache.ids:
            return
        oldest = cache.ids[0]
        older = await self._range(cache, "-", ids.unpack(oldest))
        if cache.ids and cache.ids[0] == oldest:
            cache.prepend(older, from_start=False)

    async def _range(self, cache: TopicCache, start: str, end: str) -> list[Any]:
        """Every entry from ``start`` to ``end`` (inclusive), in chunks."""
        key, batch, out = self._stream(cache.topic), self.options.read_batch, []
        while True:
            chunk = await self.client.xrange(key, start, end, count=batch)
            out += [self._event(cache, e) for e in chunk or ()]
            if not chunk or len(chunk) < batch:
                return out
            start = "(" + chunk[-1].identifier

    async def _from_start(self, topic: str) -> bool:
        """The stream still holds its first entry ever (nothing was trimmed)."""
        try:
            info = await self.client.xinfo_stream(self._stream(topic))
        except ResponseError:
            return True  # no such key: nothing was ever kept
        added = info.get("entries-added")
        return added is not None and int(added) == int(info.get("length", 0))
