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
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Final

import trio

from . import positions
from .errors import BadEventId
from .events import Event
from .history import TopicHistory, merge
from .subscriber import Subscriber

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
    __slots__ = ("history", "name", "subscribers")

    def __init__(self, name: str, history_size: int) -> None:
        self.name = name
        self.history = TopicHistory(history_size)
        self.subscribers: dict[Subscriber, None] = {}


class Hub:
    """Owns every topic, its history and its subscribers on this node.

    Args:
        history_size: events kept per topic for resume.
        retry_ms: the reconnection delay sent to clients; shutdown notices jitter it.
        origin: this node's origin token (a fresh one by default).
        heartbeat_seconds: announced in ``broker.start`` so clients can size their
            silence timeout (the heartbeat task itself runs in :func:`open_hub`).
    """

    def __init__(
        self,
        *,
        history_size: int = 1000,
        retry_ms: int = DEFAULT_RETRY_MS,
        origin: str | None = None,
        heartbeat_seconds: float = 15.0,
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
        self._delivered_by_gone = 0
        self._dropped_by_gone = 0
        self.evicted = 0

    # -- publishing -----------------------------------------------------------------------

    def publish_nowait(
        self, topic: str, data: str, *, event_type: str | None = None, is_json: bool = False
    ) -> Event:
        """Publish one event to ``topic`` and deliver it to every subscriber. Never blocks.

        The arguments must already be validated (``topics.check_topic`` etc.).
        """
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
        )
        self._deliver(event)
        return event

    def publish_batch_nowait(self, items: Iterable[PublishItem]) -> list[Event]:
        """Publish several events atomically (no other task runs in between)."""
        return [
            self.publish_nowait(
                item.topic, item.data, event_type=item.event_type, is_json=item.is_json
            )
            for item in items
        ]

    def _deliver(self, event: Event) -> None:
        self.published += 1
        state = self._topics.get(event.topic)
        if state is None:
            state = self._topics[event.topic] = _Topic(event.topic, self.history_size)
        state.history.append(event)
        for subscriber in state.subscribers:
            subscriber.offer(event)

    # -- subscribing ----------------------------------------------------------------------

    @property
    def position(self) -> str:
        """The id of the newest event delivered on this node (its position vector)."""
        return positions.format_position(self._vector)

    @contextmanager
    def subscribe(
        self, subscriber: Subscriber, topics: Iterable[str], *, resume_from: str | None = None
    ) -> Iterator[Subscriber]:
        """Register ``subscriber`` on ``topics`` for the duration of the ``with`` block.

        On entry the subscriber is offered, in order: a ``broker.start`` notice (or
        ``broker.reset`` when ``resume_from`` cannot be resumed exactly), the events it
        missed from history, then every live event. On exit, by any path, it is removed.
        """
        topic_set = frozenset(topics)
        subscriber.topics = topic_set
        notice, replay = self._start_frames(subscriber, topic_set, resume_from)
        self._subscribers[subscriber] = None
        for topic in topic_set:
            state = self._topics.get(topic)
            if state is None:
                state = self._topics[topic] = _Topic(topic, self.history_size)
            state.subscribers[subscriber] = None
        if self._closed:
            subscriber.close(self._shutdown_notice(subscriber))
        subscriber.offer_notice(*notice)
        subscriber.replay(replay)
        try:
            yield subscriber
        finally:
            self._unsubscribe(subscriber, subscriber.topics)
            del self._subscribers[subscriber]
            self._delivered_by_gone += subscriber.delivered
            self._dropped_by_gone += subscriber.mailbox.dropped
            if subscriber.end_reason == "evicted":
                self.evicted += 1

    def add_topics(self, subscriber: Subscriber, topics: Iterable[str]) -> None:
        """Add live topics to a registered subscriber (WebSocket ``subscribe``)."""
        for topic in topics:
            state = self._topics.get(topic)
            if state is None:
                state = self._topics[topic] = _Topic(topic, self.history_size)
            state.subscribers[subscriber] = None
        subscriber.topics = subscriber.topics.union(topics)

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
            if not state.subscribers and not state.history.events:
                del self._topics[topic]

    def _start_frames(
        self, subscriber: Subscriber, topics: frozenset[str], resume_from: str | None
    ) -> tuple[tuple[bytes, str], list[Event]]:
        """The start (or reset) notice and the events to replay for a new subscriber."""
        codec = subscriber.codec
        current = positions.format_position(self._vector)
        if resume_from is None:
            subscriber.position = current
            start = codec.notice(
                "broker.start",
                current,
                {
                    "position": current,
                    "resumed": False,
                    "heartbeat_seconds": self.heartbeat_seconds,
                },
                self.retry_ms,
            )
            return (start, current), []
        try:
            requested = positions.parse_position(resume_from)
        except BadEventId:
            subscriber.position = current
            payload = {"position": current, "requested": resume_from[:200], "reason": "unparsable"}
            return (codec.notice("broker.reset", current, payload, self.retry_ms), current), []
        known = {o: min(s, self._vector[o]) for o, s in requested.items() if o in self._vector}
        unknown = len(known) < len(requested)
        exact = not unknown
        missed = []
        for topic in topics:
            state = self._topics.get(topic)
            if state is not None:
                events, topic_exact = state.history.after(known)
                missed.append(events)
                exact = exact and topic_exact
        start_vector = {o: known.get(o, 0) for o in self._vector}
        start_id = positions.format_position(start_vector)
        subscriber.position = start_id
        if exact:
            notice = codec.notice(
                "broker.start",
                start_id,
                {
                    "position": start_id,
                    "resumed": True,
                    "heartbeat_seconds": self.heartbeat_seconds,
                },
                self.retry_ms,
            )
        else:
            reason = "unknown" if unknown else "evicted"
            payload = {"position": start_id, "requested": resume_from, "reason": reason}
            notice = codec.notice("broker.reset", start_id, payload, self.retry_ms)
        return (notice, start_id), merge(missed)

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
