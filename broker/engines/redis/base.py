"""What every part of the Redis engine shares: its options, state, counters and keys.

:class:`EngineBase` holds the engine's state; each concept adds its methods in a module
of its own (``publishing.py``, ``starting.py``, ``follower.py``, ``health.py``) and
``engine.py`` joins them into :class:`~.engine.RedisEngine`. The methods one concept
calls on another are declared here, with the module that has them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from ...hub import Hub, Unavailable
from ...hub.latency import LatencyHistogram
from . import entries
from .address import RedisAddress
from .cache import TopicCache
from .shards import ShardHealth

BACKOFF_MIN_SECONDS: Final = 0.1
#: The longest wait between two reconnection attempts to Redis, whatever
#: ``backoff_max_seconds`` says: once Redis answers again, publishes work again within about
#: this long (an attempt is one connection, cheap even from many nodes), instead of 503 for
#: up to ``backoff_max_seconds`` more (issue 20 measured 1-7 s).
RECONNECT_MAX_SECONDS: Final = 0.5


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """``[cluster]`` settings of the Redis engine.

    Attributes:
        url: where Redis is (``address.py``).
        key_prefix: the first part of every key and channel.
        history_size: events kept per topic (``XADD MAXLEN ~``).
        timeout_seconds: connect and command timeout.
        backoff_max_seconds: the longest wait between reconnection attempts.
        idle_topic_seconds: a topic without local subscribers is still followed this long
            (a reconnecting client finds its cache).
        read_batch: most entries read per topic per round trip.
        tls_ca_file: with TLS, the CA bundle Redis's certificate is verified against
            (the system's CAs when empty).
        tls_cert_file, tls_key_file: a client certificate for Redis, if it asks.
    """

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "broker"
    history_size: int = 1000
    timeout_seconds: float = 2.0
    backoff_max_seconds: float = 10.0
    idle_topic_seconds: float = 30.0
    read_batch: int = 1000
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


class EngineBase:
    """The Redis engine's state; see ``engine.py`` for how its parts fit."""

    # Provided by the concept modules and used across them:
    _failed: Callable[..., None]  # health.py: (exc, key=None) degraded, the supervisor wakes
    _unavailable: Callable[..., Unavailable]  # health.py: (node=None) the 503 to answer now
    _on_message: Callable[[Mapping[str, Any]], None]  # follower.py: a topic's announcement
    _ring: Callable[[str], None]  # follower.py: have the reader read a topic
    _read: Callable[[Sequence[str]], Awaitable[None]]  # follower.py: range-read topics

    def __init__(self, hub: Hub, options: RedisOptions, client: Any, address: RedisAddress) -> None:
        self.hub = hub
        self.options = options
        self.client = client
        self.address = address
        self.clustered = address.kind == "cluster"
        self._publish_command = "SPUBLISH" if self.clustered else "PUBLISH"
        self._script = client.register_script(entries.PUBLISH_LUA)
        self._admin_script = client.register_script(entries.ADMIN_LUA)
        self._meta_dirty: set[str] = set()
        self.caches: dict[str, TopicCache] = {}
        self._loading: dict[str, trio.Event] = {}
        self._dirty: set[str] = set()
        self._reading: set[str] = set()
        self._wake = trio.Event()
        self._read_lock = trio.Lock()
        self._pubsub: Any = None
        self._trouble = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._sorted: dict[frozenset[str], tuple[str, ...]] = {}
        self.healthy = True
        #: On Redis Cluster, which masters are down (``shards.py``); else ``None``.
        self.shards: ShardHealth | None = (
            ShardHealth(lambda slot: client.connection_pool.cluster_layout.node_for_slot(slot).name)
            if self.clustered
            else None
        )
        self._started = False
        self.backoff = BACKOFF_MIN_SECONDS
        self.retry_at = 0.0
        self.published = 0
        self.appends = 0
        #: Publish round trips (``/metrics``: ``broker_store_commit_seconds``; admin API).
        self.commit_latency = LatencyHistogram()
        self.last_commit_seconds: float | None = None
        self.reads = 0
        self.entries_read = 0
        self.messages = 0
        self.delivered_from_messages = 0
        self.gap_reads = 0
        self.reconnects = 0
        self.resets = 0
        self.failures = 0

    def __str__(self) -> str:
        return f"redis {self.address.redacted()}"

    def _check(self, topics: Iterable[str]) -> None:
        """Refuse now (``Unavailable``) if Redis, or on Cluster a topic's shard, is down."""
        if not self.healthy:
            raise self._unavailable()
        if self.shards is not None and self.shards.down:
            node = self.shards.first_down(self._stream(t) for t in topics)
            if node is not None:
                raise self._unavailable(node)

    # -- keys and entries -----------------------------------------------------------------

    def _stream(self, topic: str) -> str:
        return entries.stream_key(self.options.key_prefix, topic)

    def _meta(self, topic: str) -> str:
        return entries.meta_key(self.options.key_prefix, topic)

    def _topic_of(self, channel: str) -> str:
        return channel[len(self.options.key_prefix) + 2 : -1]

    def _event(self, cache: TopicCache, entry: Any) -> Any:
        return entries.event_from_fields(
            cache.topic, cache.tag, entry.identifier, entry.field_values
        )
