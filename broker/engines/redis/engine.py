"""The Redis engine: topics as Redis Streams, shared by every broker node.

Theory of operation, one module per part (each docstring has the details):

* **Publishing** (``publishing.py``): one script call per request stores the events
  atomically and announces each; a ``202`` only ever names an event Redis holds, a
  publish Redis did not confirm gets ``503``.
* **Starting a stream** (``starting.py``): :meth:`prepare` tracks the topics and makes
  this node's cache (``cache.py``) reach back to the client's position;
  :meth:`plan_start` then plans from the cache without a checkpoint.
* **Live fan-out** (``follower.py``): each announcement carries its event and the id of
  the entry before it, so a node delivers straight from the message when it chains on
  its last entry and reads the stream from there when it does not; either way each
  entry becomes one :class:`~broker.hub.events.Event` for :meth:`Hub.deliver_stored`.
* **Failure** (``health.py``): any Redis error marks the engine degraded (``503``,
  ``broker.degraded``); the supervisor reconnects with backoff, catches every tracked
  topic up from its last entry, then says ``broker.recovered``. On Redis Cluster only
  the topics of the master that failed are (``shards.py``).
* **Connecting** (``connection.py``): single server, Redis Cluster or Sentinel, TLS.

:class:`RedisEngine` joins the parts over the state of ``base.py``. Every task runs in
the nursery of :func:`open_redis_engine`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import trio

from ...core.errors import ConfigError
from ...hub import Hub
from .address import parse_redis_url
from .base import RedisOptions
from .connection import FAILURES, connect, first_leaf, startup_error
from .follower import Following
from .health import Health
from .publishing import BatchSpansSlots, Publishing
from .starting import Starting

__all__ = ["BatchSpansSlots", "RedisEngine", "RedisOptions", "RedisStatistics", "open_redis_engine"]

log = logging.getLogger(__name__)


class RedisEngine(Publishing, Starting, Following, Health):
    """The :class:`~broker.hub.Store` on Redis. Use :func:`open_redis_engine`.

    Its parts: ``publishing.py`` (append, admin), ``starting.py`` (tracking topics,
    stream starts), ``follower.py`` (the live read, gaps, letting topics go) and
    ``health.py`` (degraded, reconnection); their shared state is ``base.py``'s.
    """

    def statistics(self) -> RedisStatistics:
        """The engine part of ``/stats`` and ``/metrics``."""
        last = self.last_commit_seconds
        return RedisStatistics(
            redis=self.address.redacted(),
            kind=self.address.kind,
            state="up" if self.healthy else "degraded",
            tracked_topics=len(self.caches),
            published=self.published,
            appends=self.appends,
            reads=self.reads,
            entries_read=self.entries_read,
            messages=self.messages,
            delivered_from_messages=self.delivered_from_messages,
            gap_reads=self.gap_reads,
            reconnects=self.reconnects,
            resets=self.resets,
            failures=self.failures,
            last_commit_seconds=round(last, 6) if last is not None else None,
            shards_down=tuple(sorted(self.shards.down)) if self.shards is not None else (),
        )


@dataclass(frozen=True, slots=True)
class RedisStatistics:
    """A snapshot of the Redis engine: where it is, whether it answers, what it did."""

    redis: str
    kind: str
    state: str
    tracked_topics: int
    published: int
    appends: int
    reads: int
    entries_read: int
    messages: int
    delivered_from_messages: int
    gap_reads: int
    reconnects: int
    resets: int
    failures: int
    last_commit_seconds: float | None
    #: Redis Cluster masters (``host:port``) that are down: their topics get ``503``.
    shards_down: tuple[str, ...] = ()
    engine: str = "redis"


@asynccontextmanager
async def open_redis_engine(hub: Hub, options: RedisOptions) -> AsyncIterator[RedisEngine]:
    """Run the Redis engine for ``hub``; Redis has answered when this yields.

    The hub's publishes, stream starts and deliveries go through the engine until exit,
    when every engine task has ended and the connections are closed.

    Raises:
        ConfigError: Redis cannot be used (bad URL, unreachable, refused): ``broker run``
            stops with one line and exit code 2.
    """
    try:
        address = parse_redis_url(options.url)
    except ValueError as exc:
        raise ConfigError(f"[cluster] redis_url: {exc}") from None
    library_log = logging.getLogger("coredis")
    if library_log.level == logging.NOTSET:  # its retries and reconnections are ours to tell
        library_log.setLevel(logging.WARNING)
    async with AsyncExitStack() as stack:
        try:
            client = await connect(address, options, stack)
        except* (*FAILURES, ValueError) as group:
            raise startup_error(address, first_leaf(group)) from None
        engine = RedisEngine(hub, options, client, address)
        async with trio.open_nursery() as nursery:
            engine._nursery = nursery
            await nursery.start(engine._supervisor_task)
            nursery.start_soon(engine._reader_task)
            nursery.start_soon(engine._sweep_task)
            hub.store = engine
            log.info("%s: engine ready (%s)", engine, address.kind)
            try:
                yield engine
            finally:
                engine.healthy = False  # publishes from now on are refused, not lost
                nursery.cancel_scope.cancel()
