"""Bounded per-topic history and exact resume (sans-IO).

Each topic keeps its last ``size`` events in delivery order. When an event is evicted, the
topic remembers, per origin, the highest seq it has evicted: a client whose position for
that origin is below that mark has missed events that are gone, so its resume is not exact
and it must be told (the stream says ``broker.reset``), even though the stream still
replays what is left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from .events import Event


class TopicHistory:
    """The retained events of one topic.

    Args:
        size: how many events to keep; 0 keeps none (resume is then never exact after
            an event was published).
    """

    __slots__ = ("events", "evicted")

    def __init__(self, size: int) -> None:
        self.events: deque[Event] = deque(maxlen=size)
        self.evicted: dict[str, int] = {}

    def append(self, event: Event) -> None:
        events = self.events
        if len(events) == events.maxlen:
            if events.maxlen == 0:
                self.evicted[event.origin] = event.seq
                return
            oldest = events[0]
            self.evicted[oldest.origin] = oldest.seq
        events.append(event)

    def after(self, position: Mapping[str, int]) -> tuple[list[Event], bool]:
        """Events this client has not seen, and whether that list is complete.

        Returns:
            ``(events, exact)``: the retained events with ``seq > position[origin]`` in
            delivery order, and ``False`` if some event it has not seen was evicted.
        """
        exact = all(position.get(o, 0) >= seq for o, seq in self.evicted.items())
        missing = [e for e in self.events if e.seq > position.get(e.origin, 0)]
        return missing, exact

    def last(self, count: int) -> list[Event]:
        """The newest ``count`` events, oldest first."""
        if count <= 0:
            return []
        events = self.events
        return list(events)[-count:] if count < len(events) else list(events)


def merge(histories: Iterable[list[Event]]) -> list[Event]:
    """Merge per-topic event lists into this node's delivery order."""
    lists = [h for h in histories if h]
    if len(lists) == 1:
        return lists[0]
    return sorted((e for h in lists for e in h), key=lambda e: e.index)
