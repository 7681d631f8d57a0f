"""The hub: topics, their histories and subscribers; publish, subscribe, close.

Theory of operation. :meth:`Hub.publish_nowait` is synchronous and contains no checkpoint:
it gives the event its sequence number and id, appends it to the topic's history and
offers it to every subscriber of the topic, which writes it through to the socket or
queues it. Fan-out is therefore atomic with respect to other tasks, and a slow subscriber
cannot slow the publisher or anyone else. :meth:`Hub.subscribe` is synchronous too: it
computes the replay from history and registers the subscriber in one step, so no event can
fall between replay and live (no gap, no duplicate at the seam).

Ids are position vectors (``core/positions.py``): this node's origin and, later, the
origins of its peers; the id of an event is the vector right after it.

Engines. Where events are ordered and kept is the hub's *engine* (``engine.py``), which
the hub composes and never tests for: how a stream gets ready (``prepare``), where it starts
(``plan_start``), whether a client already has everything, how events are appended, how
much history a topic keeps in memory. The default :class:`~broker.hub.memory.MemoryEngine`
keeps history in memory, mints ids from this node's vector and publishes synchronously
(``publish_nowait``); the gossip mesh (``cluster/``) adds replication on top of it. An
external :class:`Store` (the Redis engine) becomes the engine through
:class:`~broker.hub.engine.StoreEngine`: publishing awaits it (:meth:`Hub.publish`), and
events reach subscribers when the store reads them back (:meth:`Hub.deliver_stored`), on
the publishing node like on every other. The edge asks :attr:`Hub.synchronous` once per
publish; everything else (``prepare``, ``subscribe``, heartbeats, notices, shutdown) is the
same call whichever engine runs.

The hub's parts, one module per concept (each docstring has the details):

* **State** (``state.py``): options, topics, the position vector, counters, the engine.
* **Engines** (``engine.py``, ``memory.py``): the seam, and the default engine.
* **Publishing** (``publishing.py``): ``publish_nowait``, batches, store deliveries.
* **Replication** (``replication.py``): events from mesh peers, gaps, the replication log.
* **Subscriptions** (``subscriptions.py``): ``prepare``, ``subscribe``, topics added/removed.
* **Retention** (``retention.py``): retained and final events; clearing, forgetting.
* **Stats feed** (``statsfeed.py``): once-a-second samples for the admin page.

The durable default. With a :class:`~broker.hub.engine.Journal` (the embedded store,
``durable.py``) the hub still orders events and gives their ids, but a publish awaits
(:meth:`Hub.publish`): the events get their ids at once, the journal commits them in
groups, and they are delivered (and acknowledged) only then
(:meth:`~broker.hub.publishing.Publishing.deliver_committed`). Topics nobody uses for
``topic_idle_seconds`` leave memory and are read back from the store when needed.

This module joins them into :class:`Hub` with its lifetime (heartbeats, shutdown,
statistics) and :func:`open_hub`.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ..core.topics import forget_topic_memos
from .engine import Journal, NotSupported, PublishItem, Store, Unavailable
from .memory import JournalEngine
from .publishing import Publishing
from .replication import Replicated
from .retention import Retention
from .state import DEFAULT_RETRY_MS, _Topic
from .statsfeed import INTERVAL_SECONDS as STATS_INTERVAL_SECONDS
from .subscriber import Subscriber
from .subscriptions import Subscriptions

__all__ = [
    "DEFAULT_RETRY_MS",
    "Hub",
    "HubStatistics",
    "Journal",
    "NotSupported",
    "PublishItem",
    "Store",
    "Unavailable",
    "_Topic",
    "open_hub",
]


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """A snapshot of the hub (``/stats``)."""

    origin: str
    position: str
    topics: int
    subscribers: int
    subscriptions: int
    published: int
    delivered: int
    dropped: int
    evicted: int
    largest_queue_depth: int
    retained_events: int


class Hub(Publishing, Replicated, Subscriptions, Retention):
    """Owns every topic, its history and its subscribers on this node.

    Args:
        history_size: events kept per topic for resume.
        retry_ms: the reconnection delay sent to clients; shutdown notices jitter it.
        origin: this node's origin token (a fresh one by default).
        heartbeat_seconds: announced in ``broker.start`` so clients can size their
            silence timeout (the heartbeat task itself runs in :func:`open_hub`).
        log_size: events kept per origin for peers that missed them (0 without a cluster).
    """

    # -- lifetime -------------------------------------------------------------------------

    def heartbeat_nowait(self) -> None:
        """Send a heartbeat to every subscriber that was silent since the last call."""
        for subscriber in list(self._subscribers):
            subscriber.offer_heartbeat()

    def close(self) -> None:
        """Tell every subscriber the broker is stopping and end their streams.

        Each gets a ``broker.shutdown`` notice after what it has pending, with a jittered
        ``retry:`` so clients do not all come back in the same second. Subscribers that
        arrive after this get the notice at once.
        """
        self._closed = True
        for subscriber in list(self._subscribers):
            subscriber.close(self._shutdown_notice(subscriber))

    def _shutdown_notice(self, subscriber: Subscriber) -> bytes:
        retry_ms = int(self.retry_ms * random.uniform(0.5, 1.5))
        codec = subscriber.codec
        notice = codec.notice(
            "broker.shutdown", subscriber.position, {"retry_ms": retry_ms}, retry_ms
        )
        return notice + codec.goodbye

    def attach_journal(self, journal: Journal) -> None:
        """Go on from what the journal recovered: origin, position vector, index."""
        recovered = journal.recovered
        self.origin = recovered.origin
        self._vector = dict(recovered.vector)
        self._accepted = dict(recovered.vector)
        self._seq = self._vector.get(self.origin, 0)
        self._index = self._delivered_index = recovered.index
        self.cut_short = dict(recovered.retired)
        self.journal = journal
        self.engine = JournalEngine(self)
        self.synchronous = False
        journal.attach(self)

    async def expire_topics(self, step: int = 2000) -> int:
        """One expiry round: topics unused for two rounds leave memory; return how many.

        Only with a journal: their history, retained and closed state stay in the store.
        The topics are looked at ``step`` at a time with a checkpoint in between, so a
        hundred thousand topics never stall the loop (each is checked again as it goes).
        """
        self.round += 1
        old = self.round - 2
        topics = self._topics
        names = list(topics)
        gone = 0
        for start in range(0, len(names), step):
            for name in names[start : start + step]:
                state = topics.get(name)
                if (
                    state is not None
                    and state.used <= old
                    and not state.subscribers
                    and name not in self._closing
                ):
                    del topics[name]
                    self._partial.discard(name)
                    gone += 1
            await trio.lowlevel.checkpoint()
        if gone > 1000 and gone > len(topics):
            # A dict never shrinks on deletion: a copy gives its table back.
            self._topics = dict(topics)
        return gone

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> HubStatistics:
        subscribers = self._subscribers
        return HubStatistics(
            origin=self.origin,
            position=self.position,
            topics=len(self._topics),
            subscribers=len(subscribers),
            subscriptions=sum(len(s.subscribers) for s in self._topics.values()),
            published=self.published,
            delivered=self._delivered_by_gone + sum(s.delivered for s in subscribers),
            dropped=self._dropped_by_gone + sum(s.mailbox.dropped for s in subscribers),
            evicted=self.evicted,
            largest_queue_depth=max((len(s.mailbox) for s in subscribers), default=0),
            retained_events=sum(len(t.history.events) for t in self._topics.values()),
        )


@asynccontextmanager
async def open_hub(
    *,
    heartbeat_seconds: float = 15.0,
    journal: Journal | None = None,
    topic_idle_seconds: float = 300.0,
    **hub_options: int | str | None,
) -> AsyncIterator[Hub]:
    """Run a :class:`Hub` with its heartbeat task; the hub is closed on exit.

    Args:
        heartbeat_seconds: how often silent subscribers get a heartbeat.
        journal: the durable store under the hub (``durable.open_journal``), or ``None``.
        topic_idle_seconds: with a journal, a topic with no subscriber and no publish for
            about this long leaves memory (its events stay in the store); 0: never.
        **hub_options: passed to :class:`Hub`.
    """
    # **hub_options are Hub's keyword arguments, typed there; mypy cannot follow **kwargs: Any.
    hub = Hub(heartbeat_seconds=heartbeat_seconds, **hub_options)  # type: ignore[arg-type]
    if journal is not None:
        hub.attach_journal(journal)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_heartbeat_task, hub, heartbeat_seconds)
        nursery.start_soon(_flusher_task, hub)
        nursery.start_soon(_stats_task, hub)
        if journal is not None and topic_idle_seconds > 0:
            nursery.start_soon(_expiry_task, hub, journal, topic_idle_seconds)
        try:
            yield hub
        finally:
            hub.close()
            nursery.cancel_scope.cancel()


async def _heartbeat_task(hub: Hub, heartbeat_seconds: float) -> None:
    # Ticking at half the period keeps every silence under ``heartbeat_seconds``.
    while True:
        await trio.sleep(heartbeat_seconds / 2)
        hub.heartbeat_nowait()


async def _stats_task(hub: Hub) -> None:
    """Sample the hub once a second for the admin page (``statsfeed.py``)."""
    while True:
        await trio.sleep(STATS_INTERVAL_SECONDS)
        hub.stats_feed.tick(hub, trio.current_time())


async def _expiry_task(hub: Hub, journal: Journal, idle_seconds: float) -> None:
    # A topic unused for two rounds of idle/2 leaves: between idle and 1.5 x idle.
    while True:
        await trio.sleep(idle_seconds / 2)
        gone = await hub.expire_topics()
        if gone < 1000:
            continue
        if gone > len(hub._topics):
            # Most of memory just left: what the gone topics left behind goes too. Their
            # names in memos, and garbage cycles a quiet broker may not collect for hours,
            # sit in the allocator's arenas between them and keep those arenas alive. A
            # full collection costs in proportion to what stays (19 ms for 64 000 objects),
            # so it runs only when more left than stays.
            forget_topic_memos()
            gc.collect()
            await journal.drop_mapped_pages()
        await trio.to_thread.run_sync(_give_memory_back)


def _give_memory_back() -> None:
    """Hand freed heap pages back to the system after many topics left (glibc only).

    A topic's history deque is a 528-byte block from the C allocator, which keeps freed
    blocks for reuse: without this, 100 000 expired topics left the heap 2.7x its size
    before them (load/durable.py --expiry). Run in a thread: it may take milliseconds.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc has it; musl does not)
    except (OSError, AttributeError):
        return None
    return libc


async def _flusher_task(hub: Hub) -> None:
    """Coalesce bursts: once a topic has had a few events in one pass of the run loop, the
    rest of that pass leaves in one write per subscriber when this task runs (the next pass).

    The first events of a pass are still written through at once, so a paced stream gains
    no latency; in a burst (many publishes handled in one pass) each subscriber gets a few
    system calls per pass instead of one per event.
    """
    hub._coalescing = True
    try:
        while True:
            await hub._flusher.park()
            hub.flush_held()
    finally:
        hub._coalescing = False
        hub.flush_held()
