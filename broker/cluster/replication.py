"""Replication: per-origin FIFO delivery and the hold-back buffer (sans-IO).

Why per-origin sequence numbers give duplicate-free resume on any node (shared/CLUSTER.md):
every node hands an origin's events to its subscribers in that origin's seq order, exactly
once, so "the last seq of origin o this node delivered" is one number per origin, and an
event's id (the node's vector right after it) says exactly which events of each origin a
client has seen. Any node can then replay "everything with seq > P[o]" for the client's
topics: nothing it saw comes again, nothing it missed is skipped (docs/cluster-design.md).

The :class:`Replicator` enforces the order. An event that arrives ahead of a gap waits in a
bounded hold-back buffer until the gap is filled (pulled from a peer, ``catchup.py``).
Nothing here gives a gap up on a timer: only the catch-up planner decides that a range is
lost (no reachable peer holds it), and calls :meth:`Replicator.skip_to`, which reports it
(``broker.gap``) and delivers what was held behind it. Duplicates (seq already delivered)
are dropped, which is what makes asking again safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Frame = dict[str, Any]


class Replicator:
    """Delivers remote events in per-origin order.

    Args:
        vector: the node's live position vector (read: the last seq delivered per origin).
        deliver: hands one in-order event frame to the hub.
        skip: gives up an origin's events up to a seq (the hub reports it).
        max_held: most frames held back in all; beyond it new out-of-order frames are
            dropped (catch-up pulls them again).
        retired: origins that left the vector: their frames are dropped.
    """

    def __init__(
        self,
        vector: Mapping[str, int],
        deliver: Callable[[Frame], None],
        skip: Callable[[str, int], None],
        *,
        max_held: int = 100_000,
        retired: Mapping[str, int] | None = None,
    ) -> None:
        self.vector = vector
        self.retired = retired if retired is not None else {}
        self.deliver = deliver
        self.skip = skip
        self.max_held = max_held
        self._held: dict[str, dict[int, Frame]] = {}
        self.held = 0
        self.duplicates = 0
        self.dropped = 0

    def receive(self, frame: Frame) -> bool:
        """One ``ev`` frame from any peer; ``True`` if it was new (delivered or held)."""
        origin, seq = frame["o"], frame["s"]
        last = self.vector.get(origin, 0)
        if seq <= last or origin in self.retired:
            self.duplicates += 1
            return False
        held = self._held.get(origin)
        if seq == last + 1:
            if held is not None and held.pop(seq, None) is not None:
                self.held -= 1
            self.deliver(frame)
            if held is not None:
                self._drain(origin, held)
            return True
        if held is None:
            held = self._held[origin] = {}
        if seq in held:
            self.duplicates += 1
            return False
        if self.held >= self.max_held:
            self.dropped += 1
            return False
        held[seq] = frame
        self.held += 1
        return True

    def skip_to(self, origin: str, up_to: int) -> None:
        """Give up ``origin``'s events up to ``up_to``, then deliver what waited behind them."""
        if up_to > self.vector.get(origin, 0):
            self.skip(origin, up_to)
        held = self._held.get(origin)
        if held is None:
            return
        last = self.vector.get(origin, 0)
        for seq in [s for s in held if s <= last]:
            del held[seq]
            self.held -= 1
        self._drain(origin, held)

    def _drain(self, origin: str, held: dict[int, Frame]) -> None:
        while held:
            following = held.pop(self.vector.get(origin, 0) + 1, None)
            if following is None:
                break
            self.held -= 1
            self.deliver(following)
        if not held:
            del self._held[origin]

    def held_from(self) -> dict[str, int]:
        """Per origin with frames held back, the lowest held seq (the gap ends before it)."""
        return {origin: min(held) for origin, held in self._held.items() if held}

    def forget(self, origin: str) -> None:
        """Drop what is held for a retired origin."""
        held = self._held.pop(origin, None)
        if held:
            self.held -= len(held)

    def waiting(self) -> int:
        """Origins with a gap being waited for."""
        return len(self._held)
