"""Gossip membership: who is in the cluster, who is up, whom to dial (sans-IO, time is ``now``).

A node starts from seed addresses. Every link carries the sender's member list, so a node
that knows one seed learns the whole cluster, then dials every member it is not linked to.
A member whose link sends nothing for ``down_after`` seconds is marked down and its link
closed; dialing it again backs off exponentially (with jitter) up to ``backoff_max``.
"""

from __future__ import annotations

import random
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
    ) -> None:
        self.node = node
        self.addr = addr
        self.down_after = down_after
        self.backoff_max = backoff_max
        self.members: dict[str, Member] = {}
        self._seeds: dict[str, float] = {a: 0.0 for a in seeds if a != addr}
        self._seed_failures: dict[str, int] = {}
        self.dialing: set[str] = set()

    def _backoff(self, failures: int) -> float:
        base = min(self.backoff_max, 0.25 * 2 ** min(failures, 10))
        return float(base * random.uniform(0.8, 1.2))

    def learn(self, members: dict[str, str], now: float) -> None:
        """Merge a gossiped member list."""
        for node, addr in members.items():
            if node == self.node:
                continue
            member = self.members.get(node)
            if member is None:
                self.members[node] = Member(node, addr, next_dial=now)
            elif not member.up and member.addr != addr:
                member.addr = addr  # it restarted elsewhere
                member.next_dial = now

    def linked(self, node: str, addr: str, now: float) -> None:
        member = self.members.get(node)
        if member is None:
            member = self.members[node] = Member(node, addr)
        member.addr = addr
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
        """Linked members that sent nothing for ``down_after`` seconds."""
        return [
            m.node for m in self.members.values() if m.up and now - m.last_seen > self.down_after
        ]

    def gossip(self) -> dict[str, str]:
        """The member list to send: every known member and this node."""
        peers = {m.node: m.addr for m in self.members.values()}
        peers[self.node] = self.addr
        return peers
