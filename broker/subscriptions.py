"""Subscriptions: getting a stream ready, registering it, changing its topics.

See ``hub.py`` for the theory: :meth:`~Subscriptions.subscribe` plans the replay and
registers the subscriber in one synchronous step, so nothing falls between replay and live.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from . import positions
from .hubbase import HubBase, _Topic
from .replay import StartAt, has_everything, plan_start
from .store import CatchingUp
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
            CatchingUp: (an ``Unavailable``) the mesh node is still behind the client.
        """
        if self.store is not None:
            await self.store.prepare(frozenset(topics), resume_from, start_at)
        elif catchup_seconds and self.behind(resume_from):
            assert resume_from is not None
            if not await self.wait_caught_up(resume_from, catchup_seconds):
                # Starting behind the client would send ids that move it backwards, and the
                # events it already saw would come again once this node has them.
                raise CatchingUp(
                    "this node has not yet delivered every event this client saw; "
                    "retry (here or on another node)"
                )

    def _retired_view(self) -> dict[str, int]:
        """Retired origins, and those about to retire at their last seq (see replay.py)."""
        if not self.retiring:
            return self.retired
        vector = self._vector
        about = {o: vector[o] for o in self.retiring if o in vector}
        return {**self.retired, **about}

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
                self._vector,
                states,
                resume_from=resume_from,
                start_at=start_at,
                floor=self.floor,
                retired=self._retired_view(),
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
