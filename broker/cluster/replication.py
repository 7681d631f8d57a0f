"""Replication: per-origin FIFO delivery, hold-back, and what a peer is missing (sans-IO).

Why per-origin sequence numbers give duplicate-free resume on any node (shared/CLUSTER.md):
every node hands an origin's events to its subscribers in that origin's seq order, exactly
once, so "the last seq of origin o this node delivered" is one number per origin, and an
event's id (the node's vector right after it) says exactly which events of each origin a
client has seen. Any node can then replay "everything with seq > P[o]" for the client's
topics: nothing it saw comes again, nothing it missed is skipped.

The :class:`Replicator` enforces the order. An event that arrives ahead of a gap waits in a
bounded hold-back buffer until the gap is filled (by anti-entropy, from any peer); after
``holdback_seconds`` without progress the gap is given up and reported (``broker.gap``).
Duplicates (seq already delivered) are dropped, which is what makes re-sending safe.

Anti-entropy is push-based: every heartbeat carries the sender's vector; a node that sees
a peer behind on some origin sends it the missing range from its replication log
(:func:`ranges_to_send`), or a ``gap`` frame for the part its log no longer holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Frame = dict[str, Any]


@dataclass(slots=True)
class _Held:
    frames: dict[int, Frame] = field(default_factory=dict)
    since: float = 0.0
    gap_to: int = 0


class Replicator:
    """Delivers remote events in per-origin order.

    Args:
        vector: the node's live position vector (read: the last seq delivered per origin).
        deliver: hands one in-order event frame to the hub.
        skip: gives up an origin's events up to a seq (the hub reports it).
        holdback_seconds: how long an out-of-order event waits for the gap before it.
        max_held: most frames held back in all; beyond it new out-of-order frames are
            dropped (anti-entropy sends them again).
    """

    def __init__(
        self,
        vector: Mapping[str, int],
        deliver: Callable[[Frame], None],
        skip: Callable[[str, int], None],
        *,
        holdback_seconds: float = 2.0,
        max_held: int = 100_000,
    ) -> None:
        self.vector = vector
        self.deliver = deliver
        self.skip = skip
        self.holdback_seconds = holdback_seconds
        self.max_held = max_held
        self._held: dict[str, _Held] = {}
        self.held = 0
        self.duplicates = 0
        self.dropped = 0

    def receive(self, frame: Frame, now: float) -> None:
        """One ``ev`` frame from any peer."""
        origin, seq = frame["o"], frame["s"]
        last = self.vector.get(origin, 0)
        if seq <= last:
            self.duplicates += 1
            return
        if seq == last + 1:
            self.deliver(frame)
            self._drain(origin)
            return
        held = self._held.get(origin)
        if held is None:
            held = self._held[origin] = _Held(since=now)
        if seq in held.frames:
            self.duplicates += 1
        elif self.held >= self.max_held:
            self.dropped += 1
        else:
            held.frames[seq] = frame
            self.held += 1

    def gap_hint(self, origin: str, up_to: int, now: float) -> None:
        """A peer no longer holds ``origin``'s events up to ``up_to``."""
        if up_to <= self.vector.get(origin, 0):
            return
        held = self._held.get(origin)
        if held is None:
            held = self._held[origin] = _Held(since=now)
        held.gap_to = max(held.gap_to, up_to)

    def expire(self, now: float) -> None:
        """Give up gaps that were not filled within ``holdback_seconds``."""
        for origin in list(self._held):
            held = self._held[origin]
            if now - held.since < self.holdback_seconds:
                continue
            last = self.vector.get(origin, 0)
            upto = held.gap_to
            if held.frames:
                upto = max(upto, min(held.frames) - 1)
            if upto > last:
                self.skip(origin, upto)
            self._drain(origin)
            if origin in self._held:
                self._held[origin].since = now

    def _drain(self, origin: str) -> None:
        held = self._held.get(origin)
        if held is None:
            return
        frames = held.frames
        while True:
            following = frames.pop(self.vector.get(origin, 0) + 1, None)
            if following is None:
                break
            self.held -= 1
            self.deliver(following)
        last = self.vector.get(origin, 0)
        for seq in [s for s in frames if s <= last]:
            del frames[seq]
            self.held -= 1
        if not frames and held.gap_to <= last:
            del self._held[origin]

    def waiting(self) -> int:
        """Origins with a gap being waited for."""
        return len(self._held)


def ranges_to_send(
    own: Mapping[str, int],
    peer: Mapping[str, int],
    sent: dict[str, int],
    previous_peer: Mapping[str, int],
) -> list[tuple[str, int]]:
    """Which origins to push to a peer, and after which seq.

    Args:
        own: this node's vector.
        peer: the vector in the peer's latest heartbeat.
        sent: per origin, the highest seq already queued on this link (updated by caller).
        previous_peer: the peer's vector one heartbeat earlier.

    Returns:
        ``(origin, after_seq)`` for every origin where the peer is behind and nothing that
        would fill it is in flight. If the peer made no progress on an origin for a whole
        heartbeat although more was sent, the frames were lost on its side: send again.
    """
    plan = []
    for origin, last in own.items():
        theirs = peer.get(origin, 0)
        if theirs >= last:
            continue
        in_flight = sent.get(origin, 0)
        if in_flight > theirs and previous_peer.get(origin, 0) == theirs:
            in_flight = theirs  # nothing arrived in a whole heartbeat: resend
        after = max(theirs, in_flight)
        if after < last:
            plan.append((origin, after))
    return plan
