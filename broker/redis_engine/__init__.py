"""The Redis engine: each topic a Redis Stream shared by every broker node.

``ids`` (event ids ↔ stream entry ids), ``address`` (the ``redis_url`` forms),
``entries`` (keys, entry fields and the publish script) and ``cache`` (a node's copy of a
topic's tail and where a stream starts) are sans-IO; ``engine`` runs the connection, the
reader and the supervisor with coredis (which is built on anyio and runs under Trio).
"""

from .engine import BatchSpansSlots as BatchSpansSlots
from .engine import RedisEngine as RedisEngine
from .engine import RedisOptions as RedisOptions
from .engine import open_redis_engine as open_redis_engine

__all__ = ["BatchSpansSlots", "RedisEngine", "RedisOptions", "open_redis_engine"]
