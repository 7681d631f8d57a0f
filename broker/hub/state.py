"""What every part of the hub shares: its options, state and counters, and its topics.

:class:`HubBase` holds the hub's state; each concept adds its methods in a module of its
own (``publishing.py``, ``replication.py``, ``subscriptions.py``, ``retention.py``) and
``facade.py`` joins them into :class:`~broker.hub.Hub`, with its lifetime. The methods one
concept calls on another are declared here, with the module that has them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import trio

from ..core import positions
from ..core.guard import Faults
from ..core.items import PublishItem
from .engine import Acknowledger, Engine, Journal, Store, StoreEngine
from .events import Event
from .history import TopicHistory
from .latency import LatencyHistogram
from .memory import MemoryEngine
from .statsfeed import StatsFeed
from .subscriber import Subscriber

#: Base reconnection delay announced to clients (SSE ``retry:``).
DEFAULT_RETRY_MS: Final = 3000


#: The width of a publish-rate bucket: a topic's rate is over the last minute.
RATE_BUCKET_SECONDS: Final = 60.0


class _Topic:
    __slots__ = (
        "bucket",
        "bucket_end",
        "final",
        "history",
        "last_published",
        "name",
        "prev_bucket",
        "published",
        "retained",
        "subscribers",
        "tick",
        "used",
    )

    def __init__(self, name: str, history_size: int, used: int = 0) -> None:
        self.name = name
        #: The hub's expiry round when it was last published to or left (durable store).
        self.used = used
        #: Publish bookkeeping for the admin API (``note_publish``): a total, the wall time
        #: of the last publish, and two one-minute buckets for the rate.
        self.published = 0
        self.last_published = 0.0
        self.bucket = 0
        self.prev_bucket = 0
        self.bucket_end = 0.0
        #: Events published since the flusher last ran, up to publishing._HOLD_AT, from which
        #: on its subscribers' writes are held until the flusher runs.
        self.tick = 0
        self.history = TopicHistory(history_size)
        self.subscribers: dict[Subscriber, None] = {}
        self.retained: dict[str | None, Event] = {}
        self.final: Event | None = None

    def note_publish(self, at: float) -> None:
        """Count a publish at wall time ``at`` (O(1): a compare and three stores)."""
        self.published += 1
        self.last_published = at
        if at >= self.bucket_end:
            self._roll(at)
        self.bucket += 1

    def _roll(self, at: float) -> None:
        # The current bucket becomes the previous one if it is the minute just before.
        self.prev_bucket = self.bucket if at < self.bucket_end + RATE_BUCKET_SECONDS else 0
        self.bucket = 0
        self.bucket_end = (at // RATE_BUCKET_SECONDS + 1) * RATE_BUCKET_SECONDS

    def rate(self, now: float) -> float:
        """Publishes per second over the last minute (the previous bucket weighted in)."""
        width = RATE_BUCKET_SECONDS
        if now >= self.bucket_end + width:
            return 0.0
        if now >= self.bucket_end:  # the current bucket is the previous minute now
            return self.bucket * (1.0 - (now - self.bucket_end) / width) / width
        elapsed = (now - (self.bucket_end - width)) / width
        return (self.prev_bucket * (1.0 - elapsed) + self.bucket) / width

    def idle(self) -> bool:
        return not (self.subscribers or self.history.events or self.retained or self.final)


class HubBase:
    """The hub's state. How its parts fit: ``facade.py``; arguments: :class:`~broker.hub.Hub`."""

    # Provided by the concept modules and used across them:
    _deliver: Callable[[Event], None]  # publishing.py: history, logs, fan-out of an event
    _end_topic: Callable[..., None]  # retention.py: a final event ends its topic's streams
    remove_topics: Callable[[Subscriber, Iterable[str]], None]  # subscriptions.py
    behind: Callable[[str | None], bool]  # replication.py: the client saw more than we have
    wait_caught_up: Callable[[str, float], Awaitable[bool]]  # replication.py
    _shutdown_notice: Callable[[Subscriber], bytes]  # facade.py: broker.shutdown + goodbye
    publish_nowait: Callable[..., Event]  # publishing.py: the memory engine's append
    publish_batch_nowait: Callable[[Iterable[PublishItem]], list[Event]]  # publishing.py
    load_topics: Callable[[Iterable[str]], Awaitable[None]]  # retention.py (journal)
    _publish_durably: Callable[..., Awaitable[list[str]]]  # publishing.py (journal)

    def __init__(
        self,
        *,
        history_size: int = 1000,
        retry_ms: int = DEFAULT_RETRY_MS,
        origin: str | None = None,
        heartbeat_seconds: float = 15.0,
        log_size: int = 0,
    ) -> None:
        self.history_size = history_size
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_ms = retry_ms
        self.origin = origin or positions.new_origin()
        self._seq = 0
        self._index = 0
        self._vector: dict[str, int] = {self.origin: 0}
        #: Per origin, the last seq this node accepted. With a journal, events are accepted
        #: (given ids) before they are committed and delivered, so this runs ahead of
        #: ``_vector``; without one it is the same dict. The cluster orders by it.
        self._accepted: dict[str, int] = self._vector
        #: The durable store under the hub (``durable.py``), or ``None`` (memory only).
        self.journal: Journal | None = None
        #: Topics whose final event is accepted but not yet delivered (journal).
        self._closing: set[str] = set()
        #: Topic expiry (journal): the current round, bumped by facade.py's expiry task.
        self.round = 0
        #: The index of the last event delivered (journal: ``_index`` runs ahead).
        self._delivered_index = 0
        #: Topics created in memory by a delivery while older events may be in the store
        #: only (journal): a stream start reads them back first.
        self._partial: set[str] = set()
        self._topics: dict[str, _Topic] = {}
        self._subscribers: dict[Subscriber, None] = {}
        self._closed = False
        self.published = 0
        #: Per topic class (the first segment of the topic): events, and subscribers they
        #: were handed to. Bounded: past 1000 classes, new ones count as "other".
        self.published_by_class: dict[str, int] = {}
        self.fanout_by_class: dict[str, int] = {}
        self.latency = LatencyHistogram()
        self.replicated_in = 0
        #: Per origin: seconds between its last event's publish there and its arrival here.
        self.replication_delay: dict[str, float] = {}
        self.lost = 0
        #: Called with every event published on this node (the cluster replicates them).
        self.listeners: list[Callable[[Event], None]] = []
        self.log_size = log_size
        self._logs: dict[str, deque[Event]] = {}
        #: Per origin, events up to this seq may be missing here (joined late, gave up).
        self.floor: dict[str, int] = {}
        #: Origins that left the vector, with their last seq (replication.py, bounded).
        self.retired: dict[str, int] = {}
        #: Origins this node used before an operating-system crash, at the last seq that
        #: survived it (durable.py): a client past that saw events that are gone.
        self.cut_short: dict[str, int] = {}
        #: Origins about to retire: an id that does not name one has seen all of it.
        self.retiring: set[str] = set()
        self._progress = trio.Event()
        self._delivered_by_gone = 0
        self._dropped_by_gone = 0
        self.evicted = 0
        #: Once-a-second samples for the admin page (``statsfeed.py``; facade.py ticks it).
        self.stats_feed = StatsFeed()
        self._store: Store | None = None
        #: Where events are ordered and kept (``engine.py``); the memory engine by default.
        self.engine: Engine = MemoryEngine(self)
        #: Publishing is synchronous (``publish_nowait``): the engine keeps no external store.
        self.synchronous = True
        #: Internal errors contained per connection (core/guard.py): every part of the server
        #: that serves connections reaches this node's counters through its hub.
        self.faults = Faults()
        #: The mesh cluster's replicated acknowledgement, or ``None`` (single node, Redis).
        self.acknowledger: Acknowledger | None = None
        #: Coalescing (facade.py's flusher task): topics published since it last ran, and the
        #: subscribers whose direct writes wait for it.
        self._coalescing = False
        self._flusher = trio.lowlevel.ParkingLot()
        self._touched: list[_Topic] = []
        self._held: list[Subscriber] = []

    @property
    def store(self) -> Store | None:
        """The external store that orders and keeps events (the Redis engine), if any."""
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        """Make ``store`` the hub's engine (the engine does this as it starts)."""
        self._store = store
        self.engine = StoreEngine(store, self._topics)
        self.synchronous = self.engine.synchronous
