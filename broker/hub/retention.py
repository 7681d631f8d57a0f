"""What a topic keeps besides live delivery: retained events, its final event, history.

A final event ends its topic's streams (:meth:`~Retention._end_topic`); the admin
endpoints clear retained events or forget a topic; a :class:`~broker.hub.engine.Store` sets
and drops what the hub holds of a topic.
"""

from __future__ import annotations

from collections.abc import Mapping
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
