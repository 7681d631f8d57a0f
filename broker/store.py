"""The engine interface: what an external store implements (the Redis engine).

A :class:`Store` orders and keeps the events in place of the hub (see ``hub.py``,
*Engines*); :class:`PublishItem` is what the edge hands to any engine to publish, and
:class:`Unavailable` and :class:`NotSupported` are the answers an engine can give instead.
:class:`Acknowledger` is how the mesh makes a publish wait until peers stored it.
``broker.hub`` re-exports these names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from .errors import ClientError
from .replay import StartAt, StartPlan


class PublishItem(NamedTuple):
    """One event to publish, already validated at the edge.

    A named tuple: a batch makes one per event, and a frozen dataclass's ``__init__`` cost
    ~7 % of a batch publish (py-spy, load/ publish scenario).
    """

    topic: str
    data: str
    event_type: str | None = None
    is_json: bool = False


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
