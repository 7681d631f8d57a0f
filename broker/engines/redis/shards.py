"""Health per shard on Redis Cluster: which masters are down, which topics that touches.

Sans-IO. On Redis Cluster each key lives in one of 16384 hash slots and each slot on one
master (its *shard*). A failure talking to one master makes only the topics whose keys
hash to that master's slots unavailable (``503 store_unavailable``, ``broker.degraded``
to their subscribers); every other topic publishes and streams on. ``health.py`` marks a
master down when a command for its slots fails or it does not answer a ``PING``, pings
the masters that are down at least every ``RECONNECT_MAX_SECONDS``, and marks each up
again once it answers and its tracked topics are caught up.

Single-server Redis and Sentinel have one shard: the engine's own ``healthy`` flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

SLOTS: Final = 16384


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hash_slot(key: str) -> int:
    """The slot of ``key``: of its ``{hash tag}`` if it has a non-empty one."""
    raw = key.encode()
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return _crc16(raw) % SLOTS


@dataclass
class ShardHealth:
    """Which masters (by ``host:port``) are down, and since when.

    Args:
        owner: the master that holds a slot now (from the client's slot map).
    """

    owner: Callable[[int], str]
    down: dict[str, float] = field(default_factory=dict)

    def node_of(self, key: str) -> str:
        return self.owner(hash_slot(key))

    def is_down(self, key: str) -> bool:
        return bool(self.down) and self.node_of(key) in self.down

    def first_down(self, keys: Iterable[str]) -> str | None:
        """The first master among ``keys``' that is down, or ``None`` if all are up."""
        if not self.down:
            return None
        for key in keys:
            node = self.node_of(key)
            if node in self.down:
                return node
        return None

    def mark_down(self, node: str, now: float) -> bool:
        """Mark ``node`` down; ``True`` if it was up until now."""
        if node in self.down:
            return False
        self.down[node] = now
        return True

    def mark_up(self, node: str) -> bool:
        """Mark ``node`` up; ``True`` if it was down until now."""
        return self.down.pop(node, None) is not None

    def on(self, node: str, keys: Iterable[tuple[str, str]]) -> list[str]:
        """The names of ``(name, key)`` pairs whose key lives on ``node``."""
        return [name for name, key in keys if self.node_of(key) == node]
