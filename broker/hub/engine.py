"""The engine seam: where events are ordered and kept.

The hub composes one :class:`Engine` and asks it everything that differs between engines:
how a stream gets ready and where it starts, whether the client already has everything,
how events are appended, how many events a topic keeps in the hub's memory. The hub itself
never tests which engine runs.

* :class:`~broker.hub.memory.MemoryEngine` (the default, and the mesh's): history in the
  hub's memory, ids from the node's position vector, synchronous publishing.
* :class:`~broker.hub.memory.JournalEngine` (``[storage] kind = "durable"``, the
  default of ``broker run``): the memory engine with a :class:`Journal` under it (the
  embedded store in ``broker/engines/durable.py``); a publish awaits its group commit and
  is delivered after it, and topics that left memory are read back from the journal.
* :class:`StoreEngine` adapts an external :class:`Store` that orders and keeps the events
  in place of the hub (the Redis engine in ``broker/engines/redis``): publishing awaits the
  store, and events reach subscribers when the store reads them back
  (``Hub.deliver_stored``).

:class:`~broker.core.items.PublishItem` (re-exported here) is what the edge hands to any
engine to publish, and :class:`Unavailable` and :class:`NotSupported` are the answers an
engine can give instead. :class:`Acknowledger` is how the mesh makes a publish wait until
peers stored it. ``broker.hub`` re-exports these names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..core.errors import ClientError
from ..core.items import PublishItem as PublishItem
from .replay import StartAt, StartPlan

if TYPE_CHECKING:  # only the types: the hub and its topic record sit above this module
    from .events import Event
    from .state import _Topic


class Unavailable(ClientError):
    """The event store cannot be reached; nothing was stored. Answered 503 + Retry-After."""

    status = 503
    code = "store_unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class NotReplicated(Unavailable):
    """``ack = replicated``: too few peers stored the event (or are linked to store it).

    Raised before publishing when fewer than ``min_replicas`` peers are linked (nothing was
    stored), or after ``ack_timeout_seconds`` without enough acknowledgements (the event was
    stored on this node and may still reach the others; a retry may store it twice).
    """

    code = "not_replicated"


class CatchingUp(Unavailable):
    """A client resumes on a node that has delivered less than the client has seen, and
    the node did not catch up in time: starting now would move the client backwards (and
    repeat events later), so the client is asked to retry (SSE: ``broker.degraded``)."""

    code = "catching_up"


class Acknowledger(Protocol):
    """Replicated acknowledgement (the mesh cluster): a publish waits for peers."""

    #: ``"local"`` or ``"replicated"``: the level of a request that names none.
    default_ack: str

    def check_replicas(self) -> None:
        """Raise :class:`NotReplicated` if too few peers are linked to replicate now."""

    async def confirm(self, seq: int) -> None:
        """Return once ``min_replicas`` peers delivered this node's events up to ``seq``.

        Raises:
            NotReplicated: not within the acknowledgement timeout.
        """


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


class Engine(Protocol):
    """Where events are ordered and kept, as the hub sees it (see the module docstring)."""

    #: Publishing is synchronous (``Hub.publish_nowait``, no checkpoint).
    synchronous: bool
    #: How many events each topic keeps in the hub's memory (0: the engine keeps them).
    history_size: int

    async def prepare(
        self,
        topics: frozenset[str],
        resume_from: str | None,
        start_at: StartAt | None,
        catchup_seconds: float,
    ) -> None:
        """Get ready to plan a stream's start without waiting. Raises Unavailable."""
        ...

    def plan_start(
        self,
        topics: frozenset[str],
        states: Sequence[_Topic],
        resume_from: str | None,
        start_at: StartAt | None,
    ) -> StartPlan:
        """What a new stream gets first: notice, retained and missed events."""
        ...

    def end_position(self, plan: StartPlan) -> str:
        """The id ``broker.end`` carries when the replay already ends the stream."""
        ...

    def stream_is_over(self, topics: Sequence[str], resume_from: str) -> bool:
        """Every topic is closed and ``resume_from`` includes each final event."""
        ...

    def track_nowait(self, topics: Sequence[str]) -> None:
        """Follow topics a live subscriber was given (WebSocket ``subscribe``)."""
        ...

    async def append(
        self, items: Sequence[PublishItem], *, retain: bool = False, final: bool = False
    ) -> list[str]:
        """Order and keep events atomically; return their ids. Raises Unavailable."""
        ...


class StoreEngine:
    """An external :class:`Store` as the hub's engine."""

    synchronous = False
    history_size = 0  # the store keeps history; the hub keeps only retained and final events

    def __init__(self, store: Store, topics: Mapping[str, _Topic]) -> None:
        self.store = store
        self._topics = topics

    async def prepare(
        self,
        topics: frozenset[str],
        resume_from: str | None,
        start_at: StartAt | None,
        catchup_seconds: float,
    ) -> None:
        await self.store.prepare(topics, resume_from, start_at)

    def plan_start(
        self,
        topics: frozenset[str],
        states: Sequence[_Topic],
        resume_from: str | None,
        start_at: StartAt | None,
    ) -> StartPlan:
        return self.store.plan_start(topics, {s.name: s for s in states}, resume_from, start_at)

    def end_position(self, plan: StartPlan) -> str:
        return plan.position

    def stream_is_over(self, topics: Sequence[str], resume_from: str) -> bool:
        return self.store.stream_is_over(sorted(topics), self._topics, resume_from)

    def track_nowait(self, topics: Sequence[str]) -> None:
        self.store.track_nowait(topics)

    async def append(
        self, items: Sequence[PublishItem], *, retain: bool = False, final: bool = False
    ) -> list[str]:
        return await self.store.append(items, retain=retain, final=final)


class Journal(Protocol):
    r"""A durable log *under* the hub (the embedded store, ``durable.py``).

    Why not a :class:`Store`: a store orders events itself and hands out its own ids (the
    Redis engine's stream ids); the embedded store keeps the hub's ordering and ids
    (position vectors, so the mesh and resume work unchanged) and only makes them durable
    before delivery. The hub gives a publish its ids, :meth:`append`\ s the events, and
    the journal calls back ``hub.deliver_committed(events)`` once they are committed (or
    ``hub.abandon_staged(events)`` when they could not be), in the order appended. The
    hub's engine is then :class:`~broker.hub.memory.JournalEngine`.
    """

    #: Why the store cannot write right now (``/readyz``), or ``None``.
    problem: str | None
    #: What the start found: ``origin``, ``index``, ``vector`` and ``retired`` (the last
    #: seq of an epoch an operating-system crash cut short), as ``durable.Recovered``.
    recovered: Any

    def statistics(self) -> Any:
        """A frozen record for ``/stats`` (``durable.JournalStatistics``)."""
        ...

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

    async def drop_mapped_pages(self) -> None:
        """Take the store's file pages out of the process's memory (after an expiry)."""
        ...
