"""The Redis engine: topics as Redis Streams, shared by every broker node.

Theory of operation.

* **Publishing** runs :data:`~.entries.PUBLISH_LUA` (one call per request, so a batch is
  atomic) and answers once Redis has stored the events: a ``202`` is only ever given for
  an event Redis holds. If Redis cannot be reached (or does not answer within
  ``timeout_seconds``), the publish is refused with ``503`` and ``Retry-After``; while the
  engine is degraded, publishes are refused at once without trying.
* **Live fan-out**: a node follows a topic only while it has local subscribers for it
  (the topic is *tracked*). It subscribes to the topic's notification channel; each
  message carries one stored event and the id of the entry before it (``entries.py``). If
  that predecessor is this node's last entry of the topic, the event is delivered straight
  from the message; otherwise (a message missed, a catch-up pending, Redis restarted) the
  topic is marked and the reader task reads the stream from its last entry
  (``XRANGE key <last> +``, inclusive, so it also learns whether the stream still holds
  it), all marked topics in one pipelined round trip. Either way each entry becomes one
  :class:`~broker.events.Event` handed to :meth:`Hub.deliver_stored`, which shares its
  frames with every local subscriber as on the mesh (queues, drop-oldest and notices are
  the hub's own).
* **Why messages plus range reads, not a blocking XREAD**: measured with
  ``tests/redis/measure_live_read.py`` (README "Cluster on Redis"), taking the event from
  the message costs about half the reader CPU of a blocking ``XREAD`` loop and less Redis
  CPU, with lower latency, because no command is sent per event. A blocking ``XREAD``
  would also have to be re-issued whenever the set of tracked topics changes, and on Redis
  Cluster one command cannot name keys of different slots (a connection per topic);
  channels are added and removed on one connection without interrupting it, and
  ``SSUBSCRIBE`` keeps each topic's messages on its shard.
* **Starting a stream**: :meth:`prepare` makes sure the topic is tracked and that this
  node's cache (``cache.py``) reaches back to the client's position, reading the stream
  where it does not; :meth:`plan_start` then plans from the cache without a checkpoint.
* **Failure**: any Redis error marks the engine *degraded*: every subscriber gets
  ``broker.degraded`` (streams stay open with heartbeats), publishes and new streams are
  refused with ``503``. The supervisor drops every pooled connection (a hung server, or
  on Sentinel a demoted or unreachable primary, keeps them open), reconnects with jittered
  exponential backoff (on Sentinel, to whichever server the sentinels name now),
  subscribes to every tracked topic again and reads each stream from its last entry: the
  events missed meanwhile are delivered in order, once, then ``broker.recovered``. If a
  stream no longer holds a node's last entry (Redis restarted empty, or trimmed past it),
  that topic's subscribers get ``broker.reset`` in-band and the stream goes on.

Every task runs in the nursery of :func:`open_redis_engine`.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import anyio
import coredis
import trio
from coredis.connection import TCPLocation
from coredis.exceptions import RedisError, ResponseError
from coredis.retry import NoRetryPolicy

from ..errors import BadEventId, ClientError, ConfigError, TopicClosed
from ..hub import Hub, PublishItem, Unavailable
from ..replay import StartAt, StartPlan
from . import cache as caching
from . import entries, ids
from .address import RedisAddress, parse_redis_url
from .cache import TopicCache

log = logging.getLogger(__name__)

#: A stream start may take this long between :meth:`prepare` and the plan before the
#: cache it prepared may be trimmed.
PIN_SECONDS: Final = 30.0
BACKOFF_MIN_SECONDS: Final = 0.1

#: What a Redis call can fail with (``OSError`` includes the builtin ``TimeoutError``;
#: anyio's errors come from a connection coredis closed under a pending command).
_FAILURES: Final = (
    RedisError,
    OSError,
    trio.TooSlowError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
)


class BatchSpansSlots(ClientError):
    """On Redis Cluster a batch can only be atomic within one topic's slot."""

    status = 400
    code = "batch_spans_slots"


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """``[cluster]`` settings of the Redis engine.

    Attributes:
        url: where Redis is (``address.py``).
        key_prefix: the first part of every key and channel.
        history_size: events kept per topic (``XADD MAXLEN ~``).
        timeout_seconds: connect and command timeout.
        backoff_max_seconds: the longest wait between reconnection attempts.
        idle_topic_seconds: a topic without local subscribers is still followed this long
            (a reconnecting client finds its cache).
        read_batch: most entries read per topic per round trip.
        tls_ca_file: with TLS, the CA bundle Redis's certificate is verified against
            (the system's CAs when empty).
        tls_cert_file, tls_key_file: a client certificate for Redis, if it asks.
    """

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "broker"
    history_size: int = 1000
    timeout_seconds: float = 2.0
    backoff_max_seconds: float = 10.0
    idle_topic_seconds: float = 30.0
    read_batch: int = 1000
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


class RedisEngine:
    """The :class:`~broker.hub.Store` on Redis. Use :func:`open_redis_engine`."""

    def __init__(self, hub: Hub, options: RedisOptions, client: Any, address: RedisAddress) -> None:
        self.hub = hub
        self.options = options
        self.client = client
        self.address = address
        self.clustered = address.kind == "cluster"
        self._publish_command = "SPUBLISH" if self.clustered else "PUBLISH"
        self._script = client.register_script(entries.PUBLISH_LUA)
        self._admin_script = client.register_script(entries.ADMIN_LUA)
        self._meta_dirty: set[str] = set()
        self.caches: dict[str, TopicCache] = {}
        self._loading: dict[str, trio.Event] = {}
        self._dirty: set[str] = set()
        self._reading: set[str] = set()
        self._wake = trio.Event()
        self._read_lock = trio.Lock()
        self._pubsub: Any = None
        self._trouble = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._sorted: dict[frozenset[str], tuple[str, ...]] = {}
        self.healthy = True
        self._started = False
        self.backoff = BACKOFF_MIN_SECONDS
        self.retry_at = 0.0
        self.published = 0
        self.appends = 0
        self.reads = 0
        self.entries_read = 0
        self.messages = 0
        self.delivered_from_messages = 0
        self.gap_reads = 0
        self.reconnects = 0
        self.resets = 0
        self.failures = 0

    def __str__(self) -> str:
        return f"redis {self.address.redacted()}"

    # -- keys -----------------------------------------------------------------------------

    def _stream(self, topic: str) -> str:
        return entries.stream_key(self.options.key_prefix, topic)

    def _meta(self, topic: str) -> str:
        return entries.meta_key(self.options.key_prefix, topic)

    def _topic_of(self, channel: str) -> str:
        return channel[len(self.options.key_prefix) + 2 : -1]

    # -- publishing -----------------------------------------------------------------------

    async def append(
        self, items: Sequence[PublishItem], *, retain: bool = False, final: bool = False
    ) -> list[str]:
        """Store events atomically; return their ids (see module docstring).

        Raises:
            Unavailable: Redis is unreachable or the engine is degraded: nothing stored.
            TopicClosed: a topic was closed by a final event (nothing stored).
            BatchSpansSlots: on Redis Cluster, a batch names more than one topic.
        """
        if not self.healthy:
            raise self._unavailable()
        topics = list(dict.fromkeys(item.topic for item in items))
        if self.clustered and len(topics) > 1:
            raise BatchSpansSlots(
                "on Redis Cluster a batch is atomic only within one topic: "
                f"this one names {len(topics)} topics"
            )
        keys, args, order = entries.publish_arguments(
            self.options.key_prefix,
            self.options.history_size,
            self._publish_command,
            int(time.time() * 1000),
            [
                (
                    item.topic,
                    item.data,
                    item.event_type,
                    entries.flags(is_json=item.is_json, retain=retain, final=final),
                )
                for item in items
            ],
        )
        try:
            with trio.fail_after(self.options.timeout_seconds):
                stored = await self._script(keys, args)
        except ResponseError as exc:
            message = str(exc)
            if entries.CLOSED_ERROR in message:
                index = int(message.rsplit(" ", 1)[-1]) - 1
                raise TopicClosed(f"topic {order[index]!r} was closed by a final event") from None
            self._failed(exc)
            raise self._unavailable() from None
        except _FAILURES as exc:
            self._failed(exc)
            raise self._unavailable() from None
        self.appends += 1
        self.published += len(items)
        return [
            ids.token(ids.tag(item.topic), ids.pack(entry_id))
            for item, entry_id in zip(items, stored, strict=True)
        ]

    async def clear_retained(self, topic: str, event_type: Any = ...) -> int:
        """Forget a topic's retained events (one type, or all) on every node.

        Raises:
            Unavailable: Redis is unreachable.
        """
        field = "*" if event_type is ... else (event_type or "")
        return int(await self._admin(topic, "clear", field))

    async def forget(self, topic: str) -> bool:
        """Forget a topic's history, retained events and closed state on every node.

        Nodes that follow the topic find their last entry gone and tell its subscribers
        (``broker.reset``); the topic can be published to again.

        Raises:
            Unavailable: Redis is unreachable.
        """
        return bool(await self._admin(topic, "forget", ""))

    async def _admin(self, topic: str, operation: str, field: str) -> Any:
        if not self.healthy:
            raise self._unavailable()
        try:
            with trio.fail_after(self.options.timeout_seconds):
                return await self._admin_script(
                    [self._stream(topic), self._meta(topic)],
                    [operation, field, self._publish_command],
                )
        except _FAILURES as exc:
            self._failed(exc)
            raise self._unavailable() from None

    def _unavailable(self) -> Unavailable:
        wait = max(1.0, self.retry_at - trio.current_time())
        return Unavailable("the event store (Redis) is unreachable; retry later", wait)

    # -- starting streams -----------------------------------------------------------------

    async def prepare(
        self, topics: frozenset[str], resume_from: str | None, start_at: StartAt | None
    ) -> None:
        """Track ``topics`` and read what a stream start from ``resume_from`` needs.

        Raises:
            Unavailable: Redis is unreachable (the stream cannot start now).
        """
        if not topics:
            return
        if not self.healthy:
            raise self._unavailable()
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
        except _FAILURES as exc:
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
        new = [t for t in topics if t not in self.caches and t not in self._loading]
        if new and self._nursery is not None:
            self._nursery.start_soon(self._track_task, new)

    async def _track_task(self, topics: list[str]) -> None:
        try:
            with trio.fail_after(self.options.timeout_seconds * 3):
                await self._track([t for t in topics if t not in self.caches], {}, False)
        except _FAILURES as exc:
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
                cache = self.caches.get(topic)
                if cache is not None and not cache.ready:
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

    def _event(self, cache: TopicCache, entry: Any) -> Any:
        return entries.event_from_fields(
            cache.topic, cache.tag, entry.identifier, entry.field_values
        )

    # -- live reading ---------------------------------------------------------------------

    def _on_message(self, message: Mapping[str, Any]) -> None:
        """A topic's notification (see module docstring). Never blocks."""
        self.messages += 1
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
            try:
                await self._reload_meta([t for t in reload if t in self.caches])
                if topics:
                    await self._read(topics)
            except _FAILURES as exc:
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
                targets = [
                    (topic, cache, cache.last)
                    for topic in pending
                    if (cache := self.caches.get(topic)) is not None and cache.ready
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

    # -- health ---------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.healthy:
            self.healthy = False
            self.retry_at = trio.current_time() + self.backoff
            log.warning("%s: unreachable (%s); publishes get 503 until it is back", self, exc)
            self.hub.notify(None, "broker.degraded", {"reason": "store unreachable"})
        self._trouble.set()

    async def _supervisor_task(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep the notification connection up; after each reconnection, catch every topic up."""
        while True:
            self._trouble = trio.Event()
            failure: BaseException | None = None
            try:
                await self._session(None if self._started else task_status)
            except* _FAILURES as group:
                failure = _first(group)
            # A connection closed under us while we are being cancelled is no failure.
            if failure is not None and trio.current_effective_deadline() != -math.inf:
                if not self._started:
                    raise _startup_error(self.address, failure)
                self._failed(failure)
            self._pubsub = None
            if trio.current_effective_deadline() != -math.inf:
                self._drop_connections()
            delay = self.backoff * random.uniform(0.5, 1.0)
            self.retry_at = trio.current_time() + delay
            await trio.sleep(delay)
            self.backoff = min(self.backoff * 2, self.options.backoff_max_seconds)
            self.reconnects += 1

    def _drop_connections(self) -> None:
        """Close every pooled connection, so the next session and commands open new ones.

        A connection the server never closed would otherwise be handed out again: to a
        hung server, or on Sentinel to the old primary, which new connections would not
        reach (each asks the sentinels where the primary is, and checks its role).
        """
        self.client.connection_pool.disconnect()

    async def _session(self, task_status: trio.TaskStatus[None] | None) -> None:
        factory = self.client.sharded_pubsub if self.clustered else self.client.pubsub
        async with factory(
            retry_policy=None,
            ignore_subscribe_messages=True,
            subscription_timeout=self.options.timeout_seconds,
            # A node that only listens learns of a hung server by this PING, not from a
            # publish: ask after this much silence (coredis waits 15 s by default).
            max_idle_seconds=self.options.timeout_seconds,
        ) as pubsub:
            channels = {self._stream(t): self._on_message for t in self.caches}
            if channels:
                with trio.fail_after(self.options.timeout_seconds):
                    await pubsub.subscribe(**channels)
            self._pubsub = pubsub
            await self._read([t for t, c in self.caches.items() if c.ready])
            if not self.healthy:
                self.healthy = True
                log.info("%s: reachable again; caught up", self)
                self.hub.notify(None, "broker.recovered", {})
            self.backoff = BACKOFF_MIN_SECONDS
            if task_status is not None:
                task_status.started()
                self._started = True
            await self._trouble.wait()
            self._pubsub = None

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
                except _FAILURES as exc:
                    self._failed(exc)

    def statistics(self) -> dict[str, Any]:
        """The engine part of ``/stats``."""
        return {
            "engine": "redis",
            "redis": self.address.redacted(),
            "kind": self.address.kind,
            "state": "up" if self.healthy else "degraded",
            "tracked_topics": len(self.caches),
            "published": self.published,
            "appends": self.appends,
            "reads": self.reads,
            "entries_read": self.entries_read,
            "messages": self.messages,
            "delivered_from_messages": self.delivered_from_messages,
            "gap_reads": self.gap_reads,
            "reconnects": self.reconnects,
            "resets": self.resets,
            "failures": self.failures,
        }


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _startup_error(address: RedisAddress, exc: BaseException) -> ConfigError:
    detail = str(exc) or type(exc).__name__
    root = exc
    while root.__cause__ is not None:  # coredis wraps the reason (refused, TLS) in its own
        root = _first(root.__cause__)
    if root is not exc:
        detail = f"{detail}: {str(root) or type(root).__name__}"
    return ConfigError(f"[cluster] redis_url {address.redacted()}: cannot use Redis: {detail}")


def tls_context(options: RedisOptions) -> ssl.SSLContext:
    """The TLS context for a ``rediss`` URL: Redis's certificate and host name are
    verified (against ``tls_ca_file``, or the system's CAs); a client certificate is
    presented if one is configured."""
    context = ssl.create_default_context(cafile=options.tls_ca_file or None)
    if options.tls_cert_file:
        context.load_cert_chain(options.tls_cert_file, options.tls_key_file or None)
    return context


async def _connect(address: RedisAddress, options: RedisOptions, stack: AsyncExitStack) -> Any:
    """A connected client for ``address`` whose lifetime is ``stack``'s.

    The client's context (its connection pool runs a task group) is entered outside any
    cancel scope of ours: the connect and command timeouts bound the wait instead.
    """
    timeout = options.timeout_seconds
    common: dict[str, Any] = {
        "connect_timeout": timeout,
        "stream_timeout": timeout,
        "username": address.username,
        "password": address.password,
    }
    if address.tls:  # coredis's own default would verify no host name
        common["ssl_context"] = tls_context(options)
    client: Any
    if address.kind == "cluster":
        client = coredis.RedisCluster(
            startup_nodes=[TCPLocation(host, port) for host, port in address.nodes],
            ssl=address.tls,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),
            **common,
        )
    elif address.kind == "sentinel":
        sentinel = coredis.Sentinel(
            [TCPLocation(host, port) for host, port in address.nodes],
            decode_responses=True,
            sentinel_kwargs={"connect_timeout": timeout, "stream_timeout": timeout},
        )
        await stack.enter_async_context(sentinel)
        client = sentinel.primary_for(address.service, db=address.db, **common)
    elif address.unix_path:
        client = coredis.Redis(
            unix_socket_path=address.unix_path,
            db=address.db,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),
            **common,
        )
    else:
        client = coredis.Redis.from_url(
            address.url, decode_responses=True, retry_policy=NoRetryPolicy(), **common
        )
    await stack.enter_async_context(client)
    with trio.fail_after(timeout):
        await client.ping()
    return client


@asynccontextmanager
async def open_redis_engine(hub: Hub, options: RedisOptions) -> AsyncIterator[RedisEngine]:
    """Run the Redis engine for ``hub``; Redis has answered when this yields.

    The hub's publishes, stream starts and deliveries go through the engine until exit,
    when every engine task has ended and the connections are closed.

    Raises:
        ConfigError: Redis cannot be used (bad URL, unreachable, refused): ``broker run``
            stops with one line and exit code 2.
    """
    try:
        address = parse_redis_url(options.url)
    except ValueError as exc:
        raise ConfigError(f"[cluster] redis_url: {exc}") from None
    library_log = logging.getLogger("coredis")
    if library_log.level == logging.NOTSET:  # its retries and reconnections are ours to tell
        library_log.setLevel(logging.WARNING)
    async with AsyncExitStack() as stack:
        try:
            client = await _connect(address, options, stack)
        except* (*_FAILURES, ValueError) as group:
            raise _startup_error(address, _first(group)) from None
        engine = RedisEngine(hub, options, client, address)
        async with trio.open_nursery() as nursery:
            engine._nursery = nursery
            await nursery.start(engine._supervisor_task)
            nursery.start_soon(engine._reader_task)
            nursery.start_soon(engine._sweep_task)
            hub.store = engine
            log.info("%s: engine ready (%s)", engine, address.kind)
            try:
                yield engine
            finally:
                engine.healthy = False  # publishes from now on are refused, not lost
                nursery.cancel_scope.cancel()
