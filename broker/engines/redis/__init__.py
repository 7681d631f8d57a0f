"""The Redis engine: each topic a Redis Stream shared by every broker node.

``ids`` (event ids ↔ stream entry ids), ``address`` (the ``redis_url`` forms),
``entries`` (keys, entry fields and the publish script), ``cache`` (a node's copy of a
topic's tail and where a stream starts) and ``shards`` (which Redis Cluster masters are
down) are sans-IO. The engine runs on coredis (built on
anyio, so it runs under Trio), one module per part: ``publishing``, ``starting``,
``follower``, ``health`` and ``connection``, over the shared state of ``base``, joined in
``engine``.
"""

from .base import RedisOptions as RedisOptions
from .engine import RedisEngine as RedisEngine
from .engine import RedisStatistics as RedisStatistics
from .engine import open_redis_engine as open_redis_engine
from .publishing import BatchSpansSlots as BatchSpansSlots

__all__ = ["BatchSpansSlots", "RedisEngine", "RedisOptions", "RedisStatistics", "open_redis_engine"]
