"""What a topic keeps besides live delivery: retained events, its final event, history.

A final event ends its topic's streams (:meth:`~Retention._end_topic`); the admin
endpoints clear retained events or forget a topic; a :class:`~broker.hub.engine.Store` sets
and drops what the hub holds of a topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import EllipsisType

from .events import Event
from .history import TopicHistory
from .state import HubBase, _Topic


class Retention(HubBase):
    """Retained and final events of topics: ending, clearing, forgetting, loading."""

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

    async def load_topics(self, topics: Iterable[str]) -> None:
        """Read topics back from the journal into memory (those not there, or partial).

        What the store has is merged with what memory already has (events delivered while
        the read ran), so nothing is lost or doubled whichever finished first.

        Raises:
            Unavailable: the store cannot be read.
        """
        assert self.journal is not None
        for loaded in await self.journal.load(list(dict.fromkeys(topics))):
            self._partial.discard(loaded.name)
            state = self._topics.get(loaded.name)
            if state is None:
                state = self._topics[loaded.name] = _Topic(
                    loaded.name, self.history_size, self.round
                )
            history = state.history
            if history.events:
                newest = loaded.events[-1].index if loaded.events else 0
                merged = loaded.events + [e for e in history.events if e.index > newest]
            else:
                merged = loaded.events
            history.events.clear()
            history.events.extend(merged[-self.history_size :] if self.history_size else [])
            for origin, seq in loaded.evicted.items():
                history.evicted[origin] = max(history.evicted.get(origin, 0), seq)
            for event in merged[: max(0, len(merged) - self.history_size)]:
                history.evicted[event.origin] = max(history.evicted.get(event.origin, 0), event.seq)
            # The same event as history's object, so a start never sends it twice.
            same = {(e.origin, e.seq): e for e in history.events}
            for event_type, event in loaded.retained.items():
                state.retained.setdefault(event_type, same.get((event.origin, event.seq), event))
            if state.final is None and loaded.final is not None:
                final = loaded.final
                state.final = same.get((final.origin, final.seq), final)

    def drop_topic(self, topic: str) -> None:
        """Forget what the hub holds of a topic the store no longer follows here."""
        state = self._topics.get(topic)
        if state is not None and not state.subscribers:
            del self._topics[topic]

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

    def clear_retained(self, topic: str, event_type: str | EllipsisType | None = ...) -> int:
        """Forget a topic's retained events (one type, ``None`` for untyped, ``...`` all)."""
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
