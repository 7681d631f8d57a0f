"""Publishing and delivery on this node: events in, fan-out to subscribers.

See ``facade.py`` for the theory: :meth:`~Publishing.publish_nowait` is the hot path,
synchronous and without a checkpoint; :meth:`~Publishing.deliver_stored` and
:meth:`~Publishing.notify` are how a :class:`~broker.hub.engine.Store` delivers what it reads.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Final

from ..core import positions
from ..core.errors import TopicClosed
from .engine import NotSupported, PublishItem
from .events import Event
from .state import HubBase, _Topic
from .subscriber import Subscriber

#: Events for one topic in one pass of the run loop before its subscribers' writes are held
#: for the flusher. Holding from the second cost more than it saved where a saturated node
#: handles two paced events a pass (load/ fan-out at 5000: p99 77 -> 144 ms); from the third,
#: bursts still gain (burst 2000 -> 1000 subscribers: 91 k -> 178 k deliveries/s).
_HOLD_AT: Final = 3


class Publishing(HubBase):
    """Publishing with any engine, and delivering its events to this node's subscribers."""

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
        if not self.synchronous:
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
        return await self.engine.append(items, retain=retain, final=final)

    # -- publishing through the journal (durable.py) ---------------------------------------

    async def _publish_durably(
        self, items: Sequence[PublishItem], retain: bool, final: bool
    ) -> list[str]:
        """Give the events ids, have the journal commit them, then they are delivered."""
        journal = self.journal
        assert journal is not None
        topics = self._topics
        partial = self._partial
        missing = [i.topic for i in items if i.topic not in topics or i.topic in partial]
        if missing:  # its closed state may be in the store
            await self.load_topics(missing)
            topics = self._topics  # (expiry may have compacted it meanwhile)
        closing = self._closing
        for item in items:
            state = topics.get(item.topic)
            if (state is not None and state.final is not None) or item.topic in closing:
                raise TopicClosed(f"topic {item.topic!r} was closed by a final event")
        events = [
            self._accept(item.topic, item.data, item.event_type, item.is_json, retain, final)
            for item in items
        ]
        if final:
            closing.add(items[0].topic)
        await journal.append(events)
        return [event.id for event in events]

    def _accept(
        self,
        topic: str,
        data: str,
        event_type: str | None,
        is_json: bool,
        retain: bool,
        final: bool,
    ) -> Event:
        """Give a local event its seq, index and id (delivered after its commit)."""
        self._seq += 1
        self._index += 1
        accepted = self._accepted
        accepted[self.origin] = self._seq
        if len(accepted) == 1:
            event_id = f"{self.origin}-{positions.to_base36(self._seq)}"
        else:
            event_id = positions.format_position(accepted)
        state = self._topics.get(topic)
        if state is not None:
            state.used = self.round
        return Event(
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

    def deliver_committed(self, events: Sequence[Event]) -> None:
        """The journal committed these (in order): deliver them. Never blocks."""
        vector = self._vector
        origin = self.origin
        listeners = self.listeners
        topics = self._topics
        for event in events:
            vector[event.origin] = event.seq
            self._delivered_index = event.index
            state = topics.get(event.topic)
            if state is not None and state.final is not None:
                continue  # from a peer, for a topic this node saw closed first
            if state is None:
                # Created by this delivery: older events may be in the store only.
                self._partial.add(event.topic)
            self._deliver(event)
            if event.final:
                self._closing.discard(event.topic)
            if event.origin == origin:
                for listener in listeners:
                    listener(event)
        if any(event.origin != origin for event in events):
            self._progress.set()

    def abandon_staged(self, events: Sequence[Event]) -> None:
        """The journal could not commit these: take their ids back (nothing was delivered)."""
        for event in events:
            if event.final:
                self._closing.discard(event.topic)
        self._accepted.clear()
        self._accepted.update(self._vector)
        self._seq = self._vector.get(self.origin, 0)
        self._index = self._delivered_index

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
        state.note_publish(event.published_at)
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
        state.used = self.round
        state.history.append(event)
        # Inline note_publish (the hot path): the admin API's per-topic count and rate.
        at = event.published_at
        state.published += 1
        state.last_published = at
        if at >= state.bucket_end:
            state._roll(at)
        state.bucket += 1
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
        if self._coalescing and subscribers and state.tick < _HOLD_AT:
            if state.tick == 0:
                state.tick = 1
                self._touched.append(state)
                if len(self._touched) == 1:
                    self._flusher.unpark()
            elif state.tick < _HOLD_AT - 1:
                state.tick += 1
            else:
                # Another event for this topic before the run loop came round (a burst):
                # hold each subscriber's direct writes; the flusher sends them as one.
                state.tick = _HOLD_AT
                for subscriber in subscribers:
                    subscriber.cork()
                self._held.extend(subscribers)
        for subscriber in subscribers:
            subscriber.offer(event)
        if event.final:
            state.final = event
            self._end_topic(state, event)

    def flush_held(self) -> None:
        """Send what bursts held back: one write per held subscriber (the flusher task)."""
        for state in self._touched:
            state.tick = 0
        self._touched.clear()
        held, self._held = self._held, []
        for subscriber in held:
            subscriber.uncork()
