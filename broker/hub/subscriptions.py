"""Subscriptions: getting a stream ready, registering it, changing its topics.

See ``facade.py`` for the theory: :meth:`~Subscriptions.subscribe` plans the replay and
registers the subscriber in one synchronous step, so nothing falls between replay and live.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ..core import positions
from .replay import StartAt
from .state import HubBase, _Topic
from .subscriber import Subscriber


class Subscriptions(HubBase):
    """Streams over topics: start (replay, then live), topics added and removed, end."""

    # -- subscribing ----------------------------------------------------------------------

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
        await self.engine.prepare(frozenset(topics), resume_from, start_at, catchup_seconds)

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
        engine = self.engine
        states = []
        for topic in topic_set:
            state = self._topics.get(topic)
            if state is None:
                state = self._topics[topic] = _Topic(topic, engine.history_size)
            states.append(state)
        plan = engine.plan_start(topic_set, states, resume_from, start_at)
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
            position = engine.end_position(plan)
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
        return self.engine.stream_is_over(sorted(topics), resume_from)

    def add_topics(self, subscriber: Subscriber, topics: Iterable[str]) -> None:
        """Add live topics to a registered subscriber (WebSocket ``subscribe``)."""
        topics = list(topics)
        for topic in topics:
            state = self._topics.get(topic)
            if state is None:
                state = self._topics[topic] = _Topic(topic, self.engine.history_size)
                if self.journal is not None:  # its state is read back before a publish
                    self._partial.add(topic)
            state.subscribers[subscriber] = None
        subscriber.topics = subscriber.topics.union(topics)
        self.engine.track_nowait(topics)

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
            state.used = self.round
            if state.idle():
                del self._topics[topic]
