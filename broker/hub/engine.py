"""The engine interface: what an external store implements (the Redis engine).

A :class:`Store` orders and keeps the events in place of the hub (see ``facade.py``,
*Engines*); :class:`~broker.core.items.PublishItem` (re-exported here) is what the edge
hands to any engine to publish, and :class:`Unavailable` and :class:`NotSupported` are the
answers an engine can give instead.
``broker.hub`` re-exports these names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..core.errors import ClientError
from ..core.items import PublishItem as PublishItem
from .replay import StartAt, StartPlan

if TYPE_CHECKING:
    from .events import Event


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


class Journal(Protocol):
    r"""A durable log *under* the hub (the embedded store, ``durable.py``).

    Why not a :class:`Store`: a store orders events itself and hands out its own ids (the
    Redis engine's stream ids); the embedded store keeps the hub's ordering and ids
    (position vectors, so the mesh and resume work unchanged) and only makes them durable
    before delivery. The hub gives a publish its ids, :meth:`append`\ s the events, and
    the journal calls back ``hub.deliver_committed(events)`` once they are committed (or
    ``hub.abandon_staged(events)`` when they could not be), in the order appended.
    """

    #: Why the store cannot write right now (``/readyz``), or ``None``.
    problem: str | None

    def attach(self, hub: Any) -> None:
        """The hub to call back."""
        ...

    async def append(self, events: list[Event]) -> None:
        """Return once the events are committed and delivered. Raises Unavailable."""
        ...

    def append_nowait(self, events: list[Event]) -> None:
        """Queue events for the next commit without waiting (events from mesh peers)."""
        ...

    async def load(self, topics: Sequence[str]) -> list[Any]:
        """Read topics that are not in memory (``durable.LoadedTopic``). Raises Unavailable."""
        ...

    async def forget(self, topic: str) -> bool: ...

    async def clear_retained(self, topic: str, event_type: Any) -> int: ...
