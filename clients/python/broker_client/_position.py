"""Where a subscription resumes, and which ids it has already handed out (sans-IO).

Theory of operation: the position is the id of the last thing the broker told us about that the
caller has seen: a delivered event, or a ``broker.start``/``broker.reset``/``broker.dropped``
notice (their ids are stream positions too, so a reconnect before any event still resumes
exactly). The position only moves forward in stream order, because it is only ever set from the
stream being read.

Ids are opaque, so duplicates cannot be recognised by comparing them: the tracker remembers the
last ``window`` delivered ids and refuses to deliver one of them again. A broker that resumes
exactly never sends one; the window is the guarantee when it does (an overlap after a failover).
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["DEDUPE_WINDOW", "ResumePosition"]

DEDUPE_WINDOW: Final = 10_000
"""How many recently delivered ids are remembered to suppress duplicates."""


class ResumePosition:
    """The resume point of one subscription plus its duplicate filter.

    Args:
        last_event_id: where to start (``None``: live only, from wherever the broker is).
        window: how many delivered ids to remember.
    """

    def __init__(self, last_event_id: str | None = None, *, window: int = DEDUPE_WINDOW) -> None:
        self.last_event_id = last_event_id
        self._window = window
        self._order: deque[str] = deque()
        self._seen: set[str] = set()

    def is_duplicate(self, event_id: str) -> bool:
        """Whether an event with this id was already delivered (within the window)."""
        return event_id in self._seen

    def delivered(self, event_id: str) -> None:
        """Record that the caller received the event ``event_id``; it becomes the position."""
        self.last_event_id = event_id
        if event_id in self._seen:
            return
        self._seen.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._window:
            self._seen.discard(self._order.popleft())

    def moved(self, position: str) -> None:
        """Record a position announced by the broker (start, reset, dropped)."""
        if position:
            self.last_event_id = position
