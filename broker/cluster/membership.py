"""Gossip membership: who is in the cluster, who is up, whom to dial (sans-IO, time is ``now``).

A node starts from seed addresses. Every link carries the sender's member list, so a node
that knows one seed learns the whole cluster, then dials every member it is not linked to.
A member whose link sends nothing for ``down_after`` seconds is marked down and its link
closed; dialing it again backs off exponentially (with jitter) up to ``backoff_max``.

Removal: a member unseen for ``remove_after`` seconds (no link, no frame) is removed and a
*tombstone* ``node -> origin`` is kept and gossiped for ``tombstone_seconds``. The origin
is the member's incarnation: a rumour of the same node with the same origin (an older
member list still going round) does not bring it back; the node itself linking again, or
a rumour naming a new origin (it restarted), does.

Pauses: a node that was stopped (SIGSTOP, a VM freeze) sees every peer silent when it
wakes, although they were not; if the clock moved more than ``down_after / 2`` between two
checks, the check only restarts every member's silence timer, so the links that still
work stay up (a peer that gave up on this node closes its side and the link ends then).

Origins: every member's current origin is gossiped too, so a node knows which origins in
its vector no member uses any more (the node restarted with a new origin, or was removed):
:meth:`Membership.retirable` names those whose newest event is older than ``retire_after``
seconds (wall clock: the events' publish time), and the cluster takes them out of the
vector (ids stop naming them). A node that
retired an origin says so in its heartbeats for ``retire_after`` seconds, and a node that
still has it retires it at once (:meth:`Membership.may_retire`): otherwise, in a rolling
restart, each freshly started node would fetch the origin again from one that had not
retired it yet, start its own timer, and pass it on to the next one for ever.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class Member:
    """What this node knows of one peer."""

    node: str
    addr: str
    up: bool = False
    last_seen: float = 0.0
    next_dial: float = 0.0
    failures: int = 0
    down_since: float | None = None
    origin: str = ""


class Membership:
    """The member table of one node.

    Args:
        node: this node's id.
        addr: this node's peer address (``host:port``), advertised to others.
        seeds: peer addresses to start from.
        down_after: seconds of silence before a linked member is marked down.
        backoff_max: the longest wait between dials of an unreachable member.
    """

    def __init__(
        self,
        node: str,
        addr: str,
        seeds: list[str],
        *,
        down_after: float = 5.0,
        backoff_max: float = 10.0,
        remove_after: float = 300.0,
        tombstone_seconds: float = 3600.0,
        retire_after: float = 60.0,
        origin: str = "",
    ) -> None:
        self.node = node
        self.addr = addr
        self.origin = origin
        self.down_after = down_after
        self.backoff_max = backoff_max
        self.remove_after = remove_after
        self.tombstone_seconds = tombstone_seconds
        self.retire_after = retire_after
        self.members: dict[str, Member] = {}
        self._seeds: dict[str, float] = {a: 0.0 for a in seeds if a != addr}
        self._seed_failures: dict[str, int] = {}
        self.dialing: set[str] = set()
        #: Removed members: node -> (its origin then, until when the tombstone is kept).
        self.tombstones: dict[str, tuple[str, float]] = {}
        self._retiring: set[str] = set()
        self._last_check: float | None = None
        self.removed = 0
        self.pauses = 0

    def _backoff(self, failures: int) -> float:
        base = min(self.backoff_max, 0.25 * 2 ** min(failures, 10))
        return float(base * random.uniform(0.8, 1.2))

    def learn(
        self,
        members: dict[str, str],
        now: float,
        origins: dict[str, str] | None = None,
        gone: dict[str, str] | None = None,
    ) -> None:
        """Merge a gossiped member list, its members' origins and its tombstones."""
        origins = origins or {}
        for node, origin in (gone or {}).items():
            member = self.members.get(node)
            if node == self.node or (member is not None and member.up):
                continue  # linked to it right now: that rumour is old
            if member is None or member.origin in ("", origin):
                self._remove(node, origin, now)
        for node, addr in members.items():
            if node == self.node:
                continue
            origin = origins.get(node, "")
            tomb = self.tombstones.get(node)
            if tomb is not None:
                if not origin or origin == tomb[0]:
                    continue  # an old rumour of a removed member
                del self.tombstones[node]  # it came back as a new incarnation
            member = self.members.get(node)
            if member is None:
                self.members[node] = Member(node, addr, next_dial=now, last_seen=now)
                member = self.members[node]
            elif not member.up and member.addr != addr:
                member.addr = addr  # it restarted elsewhere
                member.next_dial = now
            if origin and not member.up:
                member.origin = origin

    def linked(self, node: str, addr: str, now: float, origin: str = "") -> None:
        self.tombstones.pop(node, None)
        member = self.members.get(node)
        if member is None:
            member = self.members[node] = Member(node, addr)
        member.addr = addr
        if origin:
            member.origin = origin
        member.up = True
        member.last_seen = now
        member.failures = 0
        member.down_since = None
        self._seeds.pop(addr, None)

    def seen(self, node: str, now: float) -> None:
        member = self.members.get(node)
        if member is not None:
            member.last_seen = now

    def unlinked(self, node: str, now: float) -> None:
        member = self.members.get(node)
        if member is not None and member.up:
            member.up = False
            member.down_since = now
            member.next_dial = now + self._backoff(member.failures)

    def dial_failed(self, addr: str, now: float) -> None:
        self.dialing.discard(addr)
        if addr in self._seeds:
            failures = self._seed_failures.get(addr, 0) + 1
            self._seed_failures[addr] = failures
            self._seeds[addr] = now + self._backoff(failures)
        for member in self.members.values():
            if member.addr == addr and not member.up:
                member.failures += 1
                member.next_dial = now + self._backoff(member.failures)
                if member.down_since is None:
                    member.down_since = now

    def dial_targets(self, now: float) -> list[str]:
        """Addresses to dial now (each is marked as being dialed)."""
        targets = [m.addr for m in self.members.values() if not m.up and m.next_dial <= now]
        targets += [a for a, at in self._seeds.items() if at <= now]
        fresh = [a for a in dict.fromkeys(targets) if a not in self.dialing and a != self.addr]
        self.dialing.update(fresh)
        return fresh

    def silent(self, now: float) -> list[str]:
        """Linked members that sent nothing for ``down_after`` seconds.

        If this node itself did not run for ``down_after / 2`` since the last check (it was
        paused), nobody is declared silent: every silence timer starts again from ``now``.
        """
        last, self._last_check = self._last_check, now
        if last is not None and now - last > self.down_after / 2:
            self.pauses += 1
            for member in self.members.values():
                member.last_seen = max(member.last_seen, now)
            return []
        return [
            m.node for m in self.members.values() if m.up and now - m.last_seen > self.down_after
        ]

    def expire(self, now: float) -> list[str]:
        """Remove members unseen for ``remove_after`` seconds; return their nodes."""
        gone = [
            m.node
            for m in self.members.values()
            if not m.up and now - max(m.last_seen, m.down_since or 0.0) > self.remove_after
        ]
        for node in gone:
            self._remove(node, self.members[node].origin, now)
        for node in [n for n, (_, until) in self.tombstones.items() if until <= now]:
            del self.tombstones[node]
        return gone

    def _remove(self, node: str, origin: str, now: float) -> None:
        member = self.members.pop(node, None)
        if member is not None:
            self.removed += 1
            self._seeds.pop(member.addr, None)
            self.dialing.discard(member.addr)
        self.tombstones[node] = (origin, now + self.tombstone_seconds)

    def gossip(self) -> dict[str, str]:
        """The member list to send: every known member and this node."""
        peers = {m.node: m.addr for m in self.members.values()}
        peers[self.node] = self.addr
        return peers

    def gossip_origins(self) -> dict[str, str]:
        """Every member's origin as far as known, this node's included."""
        origins = {m.node: m.origin for m in self.members.values() if m.origin}
        if self.origin:
            origins[self.node] = self.origin
        return origins

    def gossip_gone(self) -> dict[str, str]:
        """The tombstones to send: removed node -> its origin then."""
        return {node: origin for node, (origin, _) in self.tombstones.items()}

    def retirable(self, last_event: Mapping[str, float | None], wall_now: float) -> list[str]:
        """Origins to take out of ids: no member uses them, and no event for ``retire_after``.

        Args:
            last_event: the origins in this node's vector (its own excluded) with the
                wall-clock publish time of the newest event of each held here (``None``:
                none held). That time is data every node has alike, also a node that just
                restarted: a timer of this node's own would start again at every restart, and
                in a rolling restart shorter than ``retire_after`` nothing would ever retire.
            wall_now: the wall clock (``time.time()``).

        Nothing is retired while some member's origin is unknown: that member may still be
        using one of them.
        """
        if any(not m.origin for m in self.members.values()):
            self._retiring = set()
            return []
        claimed = {m.origin for m in self.members.values()}
        claimed.add(self.origin)
        ready = []
        retiring = set()
        for origin, at in last_event.items():
            if origin in claimed:
                continue
            age = wall_now - at if at is not None else float("inf")
            if age >= self.retire_after:
                ready.append(origin)
            elif age >= self.retire_after / 2:
                retiring.add(origin)
        self._retiring = retiring
        return ready

    def may_retire(self, origin: str) -> bool:
        """``origin`` is no member's: another node retired it, so this one may at once."""
        if origin == self.origin or any(not m.origin for m in self.members.values()):
            return False
        return all(m.origin != origin for m in self.members.values())

    def retiring(self) -> set[str]:
        """Origins half-way to retiring (at the last :meth:`retirable`): another node may
        retire them any moment, so an id that does not name one is read as having seen all
        of it."""
        return self._retiring
