"""The hub: topics, their histories and subscribers; publish, subscribe, close.

Theory of operation. :meth:`Hub.publish_nowait` is synchronous and contains no checkpoint:
it gives the event its sequence number and id, appends it to the topic's history and
offers it to every subscriber of the topic, which writes it through to the socket or
queues it. Fan-out is therefore atomic with respect to other tasks, and a slow subscriber
cannot slow the publisher or anyone else. :meth:`Hub.subscribe` is synchronous too: it
computes the replay from history and registers the subscriber in one step, so no event can
fall between replay and live (no gap, no duplicate at the seam).

Ids are position vectors (``positions.py``): this node's origin and, later, the origins of
its peers; the id of an event is the vector right after it.

Engines. Where events are ordered and kept is the cluster *engine*, behind one small
interface. The default engine is the hub itself: history in memory, ids from this node's
vector, publishing synchronous (``publish_nowait``); the gossip mesh (``cluster/``) only
adds replication on top of it. The Redis engine is a :class:`Store`: publishing awaits
it (:meth:`Hub.publish`), and events reach subscribers when the store reads them back
(:meth:`Hub.deliver_stored`), on the publishing node like on every other. Callers ask
:attr:`Hub.synchronous` once per request; everything after that (``prepare``,
``subscribe``, heartbeats, notices, shutdown) is the same call whichever engine runs.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, Protocol

import trio

from . import positions
from .errors import BadEventId, ClientError, TopicClosed
from .events import Event
from .history import TopicHistory
from .replay import StartAt, StartPlan, has_everything, plan_start
from .subscriber import LatencyHistogram, Subscriber

log = logging.getLogger(__name__)

#: Base reconnection delay announced to clients (SSE ``retry:``).
DEFAULT_RETRY_MS: Final = 3000


@dataclass(frozen=True, slots=True)
class PublishItem:
    """One event to publish, already validated at the edge."""

    topic: str
    data: str
    event_type: str | None = None
    is_json: bool = False


class Unavailable(ClientError):
    """The event store cannot be reached; nothing was stored. Answered 503 + Retry-After."""

    status = 503
    code = "store_unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class NotSupported(ClientError):
    """The running engine cannot do this (e.g. a synchronous publish on a store)."""

    status = 501
    code = "not_supported"


class Store(Protocol):
    """An external store that orders and keeps the events (the Redis engine).

    The hub calls it; it calls back :meth:`Hub.deliver_stored` with each event it reads,
    in each topic's order, and :meth:`Hub.notify` for in-band notices.
    """

    async def append(
        self, items: Sequence[PublishItem], *, retain: bool = False, final: bool = False
    ) -> list[str]:
        """Store events atomically; return their ids. Raises Unavailable, ClientError."""
        ...

    async def prepare(
        self, topics: frozenset[str], resume_from: str | None, start_at: StartAt | None
    ) -> None:
        """Make sure a stream over ``topics`` can be planned without waiting."""
        ...

    def plan_start(
        self,
        topics: frozenset[str],
        states: Mapping[str, Any],
        resume_from: str | None,
        start_at: StartAt | None,
    ) -> StartPlan: ...

    def stream_is_over(
        self, topics: Sequence[str], states: Mapping[str, Any], resume_from: str
    ) -> bool: ...

    def track_nowait(self, topics: Iterable[str]) -> None:
        """Start following topics a live subscriber was given (WebSocket ``subscribe``)."""
        ...

    async def clear_retained(self, topic: str, event_type: Any = ...) -> int:
        """``DELETE /topics/{topic}/retained`` for every node."""
        ...

    async def forget(self, topic: str) -> bool:
        """``DELETE /topics/{topic}`` for every node."""
        ...

    def variant_id(self, topics: frozenset[str]) -> str:
        """The id of the event just delivered, for a subscriber of several topics."""
        ...


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """A snapshot of the hub (``/stats``)."""

    origin: str
    position: str
    topics: int
    subscribers: int
    subscriptions: int
    published: int
    delivered: int
    dropped: int
    evicted: int
    largest_queue_depth: int
    retained_events: int


class _Topic:
    __slots__ = ("final", "history", "name", "retained", "subscribers")

    def __init__(self, name: str, history_size: int) -> None:
        self.name = name
        self.history = TopicHistory(history_size)
        self.subscribers: dict[Subscriber, None] = {}
        self.retained: dict[str | None, Event] = {}
        self.final: Event | None = None

    def idle(self) -> bool:
        return not (self.subscribers or self.history.events or self.retained or self.final)


class Hub:
    """Owns every topic, its history and its subscribers on this node.

    Args:
        history_size: events kept per topic for resume.
        retry_ms: the reconnection delay sent to clients; shutdown notices jitter it.
        origin: this node's origin token (a fresh one by default).
        heartbeat_seconds: announced in ``broker.start`` so clients can size their
            silence timeout (the heartbeat task itself runs in :func:`open_hub`).
        log_size: events kept per origin for peers that missed them (0 without a cluster).
    """

    def __init__(
        self,
        *,
        history_size: int = 1000,
        retry_ms: int = DEFAULT_RETRY_MS,
        origin: str | None = None,
        heartbeat_seconds: float = 15.0,
        log_size: int = 0,
    ) -> None:
        self.history_size = history_size
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_ms = retry_ms
        self.origin = origin or positions.new_origin()
        self._seq = 0
        self._index = 0
        self._vector: dict[str, int] = {self.origin: 0}
        self._topics: dict[str, _Topic] = {}
        self._subscribers: dict[Subscriber, None] = {}
        self._closed = False
        self.published = 0
        #: Per topic class (the first segment of the topic): events, and subscribers they
        #: were handed to. Bounded: past 1000 classes, new ones count as "other".
        self.published_by_class: dict[str, int] = {}
        self.fanout_by_class: dict[str, int] = {}
        self.latency = LatencyHistogram()
        self.replicated_in = 0
        self.lost = 0
        #: Called with every event published on this node (the cluster replicates them).
        self.listeners: list[Callable[[Event], None]] = []
        self.log_size = log_size
        self._logs: dict[str, deque[Event]] = {}
        #: Per origin, events up to this seq may be missing here (joined late, gave up).
        self.floor: dict[str, int] = {}
        self._progress = trio.Event()
        self._delivered_by_gone = 0
        self._dropped_by_gone = 0
        self.evicted = 0
        #: The external store (Redis engine), or ``None``: the hub keeps events itself.
        self.store: Store | None = None

    @property
    def synchronous(self) -> bool:
        """Publishing is synchronous (``publish_nowait``): the in-memory/mesh engine."""
        return self.store is None

    # -- publishing -----------------------------------------------------------------------

    def publish_nowait(
        self,
        topic: str,
        data: str,
        *,
        event_type: str | None = None,
        is_json: bool = False,
        retain: bool = False,
        final: bool = False,
    ) -> Event:
        """Publish one event to ``topic`` and deliver it to every subscriber. Never blocks.

        The arguments must already be validated (``topics.check_topic`` etc.).

        Args:
            retain: keep it as the topic's current state for its event type; new
                subscribers get it first, even after it left history.
            final: close the topic for good after it: subscribers get ``broker.end``, later
                publishes are refused, late joiners still get this event.

        Raises:
            TopicClosed: the topic was closed by a final event.
            NotSupported: the engine is a store (use :meth:`publish`).
        """
        state = self._topics.get(topic)
        if state is not None and state.final is not None:
            raise TopicClosed(f"topic {topic!r} was closed by a final event")
        if self.store is not None:
            raise NotSupported("this engine publishes asynchronously: POST /topics/{topic}")
        self._seq += 1
        self._index += 1
        self._vector[self.origin] = self._seq
        if len(self._vector) == 1:
            event_id = f"{self.origin}-{positions.to_base36(self._seq)}"
        else:
            event_id = positions.format_position(self._vector)
        event = Event(
            topic=topic,
            event_type=event_type,
            data=data,
            is_json=is_json,
            origin=self.origin,
            seq=self._seq,
            index=self._index,
            event_id=event_id,
            published_at=time.time(),
            retain=retain,
            final=final,
        )
        self._deliver(event)
        for listener in self.listeners:
            listener(event)
        return event

    def publish_batch_nowait(self, items: Iterable[PublishItem]) -> list[Event]:
        """Publish several events atomically (no other task runs in between)."""
        items = list(items)
        corked: dict[Subscriber, None] = {}
        for item in items:
            state = self._topics.get(item.topic)
            if state is not None:
                if state.final is not None:
                    raise TopicClosed(f"topic {item.topic!r} was closed by a final event")
                corked.update(state.subscribers)
        # Each subscriber gets the batch's frames in one write, not one write per event:
        # about 8 µs of CPU per event and subscriber saved (load/ publish scenario).
        for subscriber in corked:
            subscriber.cork()
        try:
            return [
                self.publish_nowait(
                    item.topic, item.data, event_type=item.event_type, is_json=item.is_json
                )
                for item in items
            ]
        finally:
            for subscriber in corked:
                subscriber.uncork()

    async def publish(
        self, items: Sequence[PublishItem], *, retain: bool = False, final: bool = False
    ) -> list[str]:
        """Publish events atomically with any engine; return their ids.

        On the in-memory/mesh engine this is :meth:`publish_batch_nowait` (no checkpoint);
        on a store it returns once the store has kept them.

        Raises:
            TopicClosed, Unavailable (the store is unreachable: nothing was stored).
        """
        if self.store is not None:
            return await self.store.append(items, retain=retain, final=final)
        if len(items) == 1:
            item = items[0]
            event = self.publish_nowait(
                item.topic,
                item.data,
                event_type=item.event_type,
                is_json=item.is_json,
                retain=retain,
                final=final,
            )
            return [event.id]
        return [e.id for e in self.publish_batch_nowait(items)]

    def deliver_stored(self, event: Event) -> None:
        """Deliver an event the store read back, in its topic's order. Never blocks.

        Single-topic subscribers share ``event`` (its id is the topic's position); a
        subscriber of several topics gets a copy whose id carries every topic's position,
        made once per topic set (``Store.variant_id``).
        """
        assert self.store is not None
        self.published += 1
        state = self._topics.get(event.topic)
        if state is None:
            if not (event.retain or event.final):
                return
            state = self._topics[event.topic] = _Topic(event.topic, 0)
        if event.retain:
            state.retained[event.event_type] = event
        subscribers = state.subscribers
        self._count(event.topic, len(subscribers))
        variants: dict[frozenset[str], Event] | None = None
        for subscriber in subscribers:
            topics = subscriber.topics
            if len(topics) <= 1:
                subscriber.offer(event)
                continue
            if variants is None:
                variants = {}
            variant = variants.get(topics)
            if variant is None:
                variant = variants[topics] = event.with_id(self.store.variant_id(topics))
            subscriber.offer(variant)
        if event.final:
            state.final = event
            self._end_topic(state, event, variants)

    def _count(self, topic: str, fanout: int) -> None:
        topic_class = topic.partition("/")[0]
        by_class = self.published_by_class
        if topic_class not in by_class and len(by_class) >= 1000:
            topic_class = "other"
        by_class[topic_class] = by_class.get(topic_class, 0) + 1
        self.fanout_by_class[topic_class] = self.fanout_by_class.get(topic_class, 0) + fanout

    def has_subscribers(self, topic: str) -> bool:
        state = self._topics.get(topic)
        return state is not None and bool(state.subscribers)

    def load_topic_state(
        self, topic: str, retained: dict[str | None, Event], final: Event | None
    ) -> None:
        """Set a topic's retained and final events as the store keeps them."""
        state = self._topics.get(topic)
        if state is None:
            if not (retained or final):
                return
            state = self._topics[topic] = _Topic(topic, 0)
        state.retained = retained
        state.final = final

    def drop_topic(self, topic: str) -> None:
        """Forget what the hub holds of a topic the store no longer follows here."""
        state = self._topics.get(topic)
        if state is not None and not state.subscribers:
            del self._topics[topic]

    def notify(
        self,
        topic: str | None,
        event_type: str,
        payload: dict[str, Any],
        position_keys: tuple[str, ...] = ("position",),
    ) -> None:
        """Send a ``broker.*`` notice to the subscribers of ``topic`` (``None``: all).

        Its id is each subscriber's position, so it moves no one; the payload's
        ``position_keys`` are set to that position too.
        """
        if topic is None:
            subscribers: Iterable[Subscriber] = list(self._subscribers)
        else:
            state = self._topics.get(topic)
            subscribers = list(state.subscribers) if state is not None else []
        for subscriber in subscribers:
            position = subscriber.position
            data = {**payload, **dict.fromkeys(position_keys, position)}
            subscriber.offer_notice(subscriber.codec.notice(event_type, position, data), position)

    def _deliver(self, event: Event) -> None:
        self.published += 1
        state = self._topics.get(event.topic)
        if state is None:
            state = self._topics[event.topic] = _Topic(event.topic, self.history_size)
        state.history.append(event)
        if self.log_size:
            log = self._logs.get(event.origin)
            if log is None:
                log = self._logs[event.origin] = deque(maxlen=self.log_size)
            log.append(event)
        if event.retain:
            state.retained[event.event_type] = event
        subscribers = state.subscribers
        topic_class = event.topic.partition("/")[0]
        by_class = self.published_by_class
        if topic_class not in by_class and len(by_class) >= 1000:
            topic_class = "other"
        by_class[topic_class] = by_class.get(topic_class, 0) + 1
        self.fanout_by_class[topic_class] = self.fanout_by_class.get(topic_class, 0) + len(
            subscribers
        )
        for subscriber in subscribers:
            subscriber.offer(event)
        if event.final:
            state.final = event
            self._end_topic(state, event)

    # -- replication (used by the cluster) --------------------------------------------------

    @property
    def vector(self) -> dict[str, int]:
        """This node's position vector: per origin, the last seq delivered here (read-only)."""
        return self._vector

    def deliver_remote(
        self,
        *,
        origin: str,
        seq: int,
        topic: str,
        data: str,
        event_type: str | None,
        is_json: bool,
        published_at: float,
        retain: bool = False,
        final: bool = False,
    ) -> Event | None:
        """Deliver an event another node accepted. Never blocks.

        The caller delivers each origin's events in seq order (``seq == vector[origin] + 1``,
        see ``cluster/replication.py``); this node's id for it is its vector right after.
        An event for a topic this node already saw closed is counted but not delivered.
        """
        if origin == self.origin or seq != self._vector.get(origin, 0) + 1:
            raise ValueError(f"out of order: {origin}-{seq} after {self._vector.get(origin, 0)}")
        self._index += 1
        self._vector[origin] = seq
        self.replicated_in += 1
        self._progress.set()
        state = self._topics.get(topic)
        if state is not None and state.final is not None:
            return None
        event = Event(
            topic=topic,
            event_type=event_type,
            data=data,
            is_json=is_json,
            origin=origin,
            seq=seq,
            index=self._index,
            event_id=positions.format_position(self._vector),
            published_at=published_at,
            retain=retain,
            final=final,
        )
        self._deliver(event)
        return event

    def skip_remote(self, origin: str, up_to: int) -> None:
        """Give up on an origin's events up to ``up_to``: no node can supply them any more.

        Every subscriber is told in-band (``broker.gap``); resumes from positions before
        ``up_to`` are reported as not exact from now on.
        """
        if up_to <= self._vector.get(origin, 0):
            return
        lost = up_to - self._vector.get(origin, 0)
        self._vector[origin] = up_to
        self.floor[origin] = max(self.floor.get(origin, 0), up_to)
        self.lost += lost
        self._progress.set()
        log.warning("gave up on %d events of origin %s (up to %d)", lost, origin, up_to)
        for subscriber in list(self._subscribers):
            subscriber.offer_notice(
                subscriber.codec.notice(
                    "broker.gap",
                    subscriber.position,
                    {"origin": origin, "lost": lost, "position": subscriber.position},
                ),
                subscriber.position,
            )

    def log_after(self, origin: str, seq: int, limit: int) -> tuple[list[Event], int]:
        """Up to ``limit`` events of ``origin`` after ``seq`` from the replication log.

        Returns:
            ``(events, first_available)``: ``first_available`` is the oldest seq still in
            the log (events between ``seq`` and it are gone from this node).
        """
        events = self._logs.get(origin)
        if not events:
            return [], self._vector.get(origin, 0) + 1
        first = events[0].seq
        index = min(max(0, seq + 1 - first), len(events))
        while index > 0 and events[index - 1].seq > seq:  # a skipped range shifted seqs
            index -= 1
        while index < len(events) and events[index].seq <= seq:
            index += 1
        return list(islice(events, index, index + limit)), first

    async def prepare(
        self,
        topics: Iterable[str],
        *,
        resume_from: str | None,
        start_at: StartAt | None = None,
        catchup_seconds: float = 0.0,
    ) -> None:
        """Get ready to start a stream over ``topics``; call before :meth:`subscribe`.

        The mesh waits (up to ``catchup_seconds``) until this node has delivered what a
        client coming from another node has seen; a store reads what the start needs.

        Raises:
            Unavailable: the store cannot be reached (the stream cannot start now).
        """
        if self.store is not None:
            await self.store.prepare(frozenset(topics), resume_from, start_at)
        elif catchup_seconds and self.behind(resume_from):
            assert resume_from is not None
            await self.wait_caught_up(resume_from, catchup_seconds)

    def behind(self, resume_from: str | None) -> bool:
        """This node has delivered less of some origin than the client has seen."""
        if resume_from is None:
            return False
        try:
            requested = positions.parse_position(resume_from)
        except BadEventId:
            return False
        vector = self._vector
        return any(vector.get(o, 0) < s for o, s in requested.items())

    async def wait_caught_up(self, resume_from: str, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until this node has delivered what the client saw."""
        with trio.move_on_after(timeout):
            while self.behind(resume_from):
                await self._progress.wait()
                self._progress = trio.Event()
            return True
        return False

    def _end_topic(
        self,
        state: _Topic,
        final: Event,
        variants: Mapping[frozenset[str], Event] | None = None,
    ) -> None:
        for subscriber in list(state.subscribers):
            event_id = final.id
            if variants and (variant := variants.get(subscriber.topics)) is not None:
                event_id = variant.id
            notice = subscriber.codec.notice("broker.end", event_id, {"topic": state.name})
            if subscriber.topics <= {state.name} or all(
                (t := self._topics.get(name)) is not None and t.final is not None
                for name in subscriber.topics
            ):
                subscriber.close(notice + subscriber.codec.ended)
            else:
                subscriber.offer_notice(notice, event_id)
                self.remove_topics(subscriber, [state.name])

    def clear_retained(self, topic: str, event_type: str | None = ...) -> int:  # type: ignore[assignment]
        """Forget a topic's retained events (one type, or all); return how many."""
        state = self._topics.get(topic)
        if state is None:
            return 0
        if event_type is ...:
            count = len(state.retained)
            state.retained.clear()
        else:
            count = int(state.retained.pop(event_type, None) is not None)
        if state.idle():
            del self._topics[topic]
        return count

    def forget(self, topic: str) -> bool:
        """Forget a topic's history, retained events and closed state (it can be reused)."""
        state = self._topics.get(topic)
        if state is None or not (state.history.events or state.retained or state.final):
            return False
        state.history = TopicHistory(self.history_size)
        state.retained.clear()
        state.final = None
        if state.idle():
            del self._topics[topic]
        return True

    # -- subscribing ----------------------------------------------------------------------

    @property
    def position(self) -> str:
        """The id of the newest event delivered on this node (its position vector)."""
        return positions.format_position(self._vector)

    @contextmanager
    def subscribe(
        self,
        subscriber: Subscriber,
        topics: Iterable[str],
        *,
        resume_from: str | None = None,
        start_at: StartAt | None = None,
    ) -> Iterator[Subscriber]:
        """Register ``subscriber`` on ``topics`` for the duration of the ``with`` block.

        On entry the subscriber is offered, in order: a ``broker.start`` notice (or
        ``broker.reset`` when ``resume_from`` cannot be resumed exactly), the topics'
        retained events, the events it missed (or asked for with ``start_at``) from history,
        then every live event. On exit, by any path, it is removed.
        """
        topic_set = frozenset(topics)
        states = []
        for topic in topic_set:
            state = self._topics.get(topic)
            if state is None:
                state = self._topics[topic] = _Topic(
                    topic, self.history_size if self.store is None else 0
                )
            states.append(state)
        if self.store is not None:
            plan = self.store.plan_start(
                topic_set, {s.name: s for s in states}, resume_from, start_at
            )
        else:
            plan = plan_start(
                self._vector, states, resume_from=resume_from, start_at=start_at, floor=self.floor
            )
        subscriber.topics = topic_set
        self._subscribers[subscriber] = None
        for state in states:
            state.subscribers[subscriber] = None
        codec = subscriber.codec
        if plan.notice == "broker.start":
            plan.payload["heartbeat_seconds"] = self.heartbeat_seconds
        subscriber.offer_notice(
            codec.notice(plan.notice, plan.position, plan.payload, self.retry_ms), plan.position
        )
        if self._closed:
            subscriber.close(self._shutdown_notice(subscriber))
        subscriber.replay([e.with_id(plan.position) for e in plan.first] + plan.events)
        if plan.ended:
            position = (
                positions.format_position(self._vector) if self.store is None else plan.position
            )
            subscriber.close(
                b"".join(
                    codec.notice("broker.end", position, {"topic": t}) for t in sorted(topic_set)
                )
                + codec.ended
            )
        try:
            yield subscriber
        finally:
            self._unsubscribe(subscriber, subscriber.topics)
            del self._subscribers[subscriber]
            self._delivered_by_gone += subscriber.delivered
            self._dropped_by_gone += subscriber.mailbox.dropped
            if subscriber.end_reason == "evicted":
                self.evicted += 1

    def stream_is_over(self, topics: Iterable[str], resume_from: str | None) -> bool:
        """The topics are all closed and ``resume_from`` already includes their final events."""
        if resume_from is None:
            return False
        if self.store is not None:
            return self.store.stream_is_over(sorted(topics), self._topics, resume_from)
        states = [self._topics.get(t) for t in topics]
        if any(s is None for s in states):
            return False
        return has_everything(self._vector, states, resume_from)  # type: ignore[arg-type]

    def add_topics(self, subscriber: Subscriber, topics: Iterable[str]) -> None:
        """Add live topics to a registered subscriber (WebSocket ``subscribe``)."""
        topics = list(topics)
        for topic in topics:
            state = self._topics.get(topic)
            if state is None:
                state = self._topics[topic] = _Topic(
                    topic, self.history_size if self.store is None else 0
                )
            state.subscribers[subscriber] = None
        subscriber.topics = subscriber.topics.union(topics)
        if self.store is not None:
            self.store.track_nowait(topics)

    def remove_topics(self, subscriber: Subscriber, topics: Iterable[str]) -> None:
        """Remove topics from a registered subscriber (WebSocket ``unsubscribe``)."""
        gone = subscriber.topics.intersection(topics)
        self._unsubscribe(subscriber, gone)
        subscriber.topics = subscriber.topics - gone

    def _unsubscribe(self, subscriber: Subscriber, topics: Iterable[str]) -> None:
        for topic in topics:
            state = self._topics.get(topic)
            if state is None:
                continue
            state.subscribers.pop(subscriber, None)
            if state.idle():
                del self._topics[topic]

    # -- lifetime -------------------------------------------------------------------------

    def heartbeat_nowait(self) -> None:
        """Send a heartbeat to every subscriber that was silent since the last call."""
        for subscriber in list(self._subscribers):
            subscriber.offer_heartbeat()

    def close(self) -> None:
        """Tell every subscriber the broker is stopping and end their streams.

        Each gets a ``broker.shutdown`` notice after what it has pending, with a jittered
        ``retry:`` so clients do not all come back in the same second. Subscribers that
        arrive after this get the notice at once.
        """
        self._closed = True
        for subscriber in list(self._subscribers):
            subscriber.close(self._shutdown_notice(subscriber))

    def _shutdown_notice(self, subscriber: Subscriber) -> bytes:
        retry_ms = int(self.retry_ms * random.uniform(0.5, 1.5))
        codec = subscriber.codec
        notice = codec.notice(
            "broker.shutdown", subscriber.position, {"retry_ms": retry_ms}, retry_ms
        )
        return notice + codec.goodbye

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> HubStatistics:
        subscribers = self._subscribers
        return HubStatistics(
            origin=self.origin,
            position=self.position,
            topics=len(self._topics),
            subscribers=len(subscribers),
            subscriptions=sum(len(s.subscribers) for s in self._topics.values()),
            published=self.published,
            delivered=self._delivered_by_gone + sum(s.delivered for s in subscribers),
            dropped=self._dropped_by_gone + sum(s.mailbox.dropped for s in subscribers),
            evicted=self.evicted,
            largest_queue_depth=max((len(s.mailbox) for s in subscribers), default=0),
            retained_events=sum(len(t.history.events) for t in self._topics.values()),
        )


@asynccontextmanager
async def open_hub(
    *, heartbeat_seconds: float = 15.0, **hub_options: int | str | None
) -> AsyncIterator[Hub]:
    """Run a :class:`Hub` with its heartbeat task; the hub is closed on exit.

    Args:
        heartbeat_seconds: how often silent subscribers get a heartbeat.
        **hub_options: passed to :class:`Hub`.
    """
    hub = Hub(heartbeat_seconds=heartbeat_seconds, **hub_options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_heartbeat_task, hub, heartbeat_seconds)
        try:
            yield hub
        finally:
            hub.close()
            nursery.cancel_scope.cancel()


async def _heartbeat_task(hub: Hub, heartbeat_seconds: float) -> None:
    # Ticking at half the period keeps every silence under ``heartbeat_seconds``.
    while True:
        await trio.sleep(heartbeat_seconds / 2)
        hub.heartbeat_nowait()
