"""Pull-based catch-up: whom to ask for which range, and when a range is lost (sans-IO).

Theory of operation (shared/CLUSTER.md, issue 20):

* Every heartbeat is a *digest*: for each origin, the highest seq the peer has delivered
  (``high``, its vector) and the lowest seq it still holds in its replication log
  (``low``; 1 when absent). A node that delivers sequentially holds ``low..high`` without a
  hole, so one pair per origin says exactly which seqs the peer can serve.
* A node behind on an origin asks **one** peer that holds the next seq for pages of it
  (``pull``), at most ``window`` pages outstanding. The peer answers with the events and a
  ``page`` frame; each answer triggers the next request, so the rate is set by how fast
  this node applies, not by a timer (flow control is the puller's). Other peers send
  nothing for that range: no duplicate pushes.
* A pull that makes no progress for ``stall_seconds`` (counted from the last seq delivered
  or the last page answered, never from when it began) is dropped and the peer avoided for
  that origin for a while; another holder is asked.
* A range is declared lost (:class:`Gap`) only when no reachable peer holds its first seq
  any more (every linked peer's ``low`` is above it, or nobody has it), every known member
  is reachable (an unreachable one may hold it: a partition must not lose events; a member
  gone for good is removed by membership.py, and then the gap is declared), and nothing
  has arrived for that origin for ``gap_grace_seconds``. Evidence that an origin has more than
  this node: a peer's ``high``, a held-back frame (an event that arrived ahead of the gap),
  or what the origin itself claimed before it went away (``claimed``): so a crashed
  origin's in-flight tail that no survivor got is reported, not silently forgotten.

Nothing here does IO: the node feeds in digests, answers and the clock, and carries out the
:class:`Pull` and :class:`Gap` decisions that :meth:`CatchUp.plan` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

#: Events per page: large enough that the round trip is amortised, small enough that a
#: page fits a link's send queue many times over.
PAGE_EVENTS: Final = 1000
#: Pages in flight per origin: one being applied while the next one travels.
WINDOW_PAGES: Final = 2


@dataclass(slots=True)
class Holding:
    """What one peer says it holds: per origin, the seqs ``low..high``."""

    high: dict[str, int] = field(default_factory=dict)
    low: dict[str, int] = field(default_factory=dict)

    def holds(self, origin: str, seq: int) -> bool:
        return self.low.get(origin, 1) <= seq <= self.high.get(origin, 0)


@dataclass(frozen=True, slots=True)
class Pull:
    """Ask ``peer`` for up to ``count`` events of ``origin`` after seq ``after``."""

    peer: str
    origin: str
    after: int
    count: int


@dataclass(frozen=True, slots=True)
class Gap:
    """No reachable peer holds ``origin``'s events up to ``up_to``: give them up, report."""

    origin: str
    up_to: int
    #: The topics the lost events were on, as the holder's index knew them; ``None``:
    #: unknown (no reachable node holds them), so every stream may have missed one.
    topics: tuple[str, ...] | None = None


@dataclass(slots=True)
class _Active:
    peer: str
    requested: int  # the highest seq asked for so far
    outstanding: int  # pages asked and not answered
    progress_at: float
    progress_seq: int


class CatchUp:
    """The catch-up decisions of one node.

    Args:
        page_events: events asked per ``pull``.
        window: pages outstanding per origin.
        stall_seconds: a pull without progress for this long is given to another peer.
        gap_grace_seconds: how long an origin must have made no progress, with no reachable
            holder of its next seq, before the range is declared lost.
        patience_seconds: with no hole (nothing held back), how long a node that is behind
            waits for the live frames already on their way before it pulls: a digest can
            overtake events another link is still carrying, and pulling those would only
            bring duplicates.
        retired: origins that left the vector (the hub's table): never caught up.
    """

    def __init__(
        self,
        *,
        page_events: int = PAGE_EVENTS,
        window: int = WINDOW_PAGES,
        stall_seconds: float = 2.0,
        gap_grace_seconds: float = 2.0,
        patience_seconds: float = 0.0,
        retired: Mapping[str, int] | None = None,
    ) -> None:
        self.retired = retired if retired is not None else {}
        self.patience_seconds = patience_seconds
        self.page_events = page_events
        self.window = window
        self.stall_seconds = stall_seconds
        self.gap_grace_seconds = gap_grace_seconds
        self.peers: dict[str, Holding] = {}
        #: Per origin, the highest seq any digest ever claimed (also after its peer left).
        self.claimed: dict[str, int] = {}
        self._active: dict[str, _Active] = {}
        self._progress: dict[str, tuple[int, float]] = {}
        self._avoid: dict[tuple[str, str], float] = {}
        #: Per origin, a holder's word that it lacks ``after+1..up_to``: (after, up_to,
        #: the topics its index says those events were on, or None).
        self._lost: dict[str, tuple[int, int, tuple[str, ...] | None]] = {}
        self._probed: dict[str, float] = {}
        self._everyone_reachable = True
        self.pulls = 0
        self.pages = 0
        self.stalls = 0
        self.gaps = 0

    # -- input ----------------------------------------------------------------------------

    def digest(
        self, peer: str, high: Mapping[str, int], low: Mapping[str, int], now: float
    ) -> None:
        """A peer's heartbeat: what it holds now."""
        self.peers[peer] = Holding(dict(high), dict(low))
        claimed = self.claimed
        for origin, seq in high.items():
            if seq > claimed.get(origin, 0):
                claimed[origin] = seq

    def peer_gone(self, peer: str) -> None:
        """The link to ``peer`` ended: it is no longer reachable."""
        self.peers.pop(peer, None)
        for origin in [o for o, a in self._active.items() if a.peer == peer]:
            del self._active[origin]

    def answered(
        self,
        peer: str,
        origin: str,
        after: int,
        count: int,
        to: int,
        low: int,
        now: float,
        topics: Iterable[str] | None = None,
    ) -> None:
        """``peer`` answered a pull: it sent ``origin``'s events ``after+1..to``.

        ``low`` is the lowest seq it holds now; when that is past ``after + 1``, ``topics``
        are the topics its index says ``after+1..low-1`` were on (``None``: unknown). A
        short page (``to < after + count``) ends the pull, so the next plan starts again
        from this node's position.
        """
        self.pages += 1
        if to <= after and low > after + 1:
            self._lost[origin] = (after, low - 1, None if topics is None else tuple(topics))
        holding = self.peers.get(peer)
        if holding is not None:
            holding.low[origin] = low
            if to > holding.high.get(origin, 0):
                holding.high[origin] = to
        active = self._active.get(origin)
        if active is None or active.peer != peer:
            return
        active.outstanding = max(0, active.outstanding - 1)
        active.progress_at = now
        if to < after + count:  # it could not send all it was asked: start again
            del self._active[origin]

    def forget(self, origins: Iterable[str]) -> None:
        """Origins that left the position vector (retired): no catch-up for them."""
        for origin in origins:
            self.claimed.pop(origin, None)
            self._active.pop(origin, None)
            self._progress.pop(origin, None)
            self._lost.pop(origin, None)
            self._probed.pop(origin, None)
            for holding in self.peers.values():
                holding.high.pop(origin, None)
                holding.low.pop(origin, None)

    # -- decisions ------------------------------------------------------------------------

    def plan(
        self,
        vector: Mapping[str, int],
        held: Mapping[str, int],
        now: float,
        *,
        everyone_reachable: bool = True,
    ) -> list[Pull | Gap]:
        """What to do now.

        Args:
            vector: this node's vector (last seq delivered per origin).
            held: per origin, the lowest held-back seq (frames that arrived ahead).
            now: the current time.
            everyone_reachable: every known member is linked. While one is not (a partition,
                a node restarting), no gap is declared: it may hold the range. A member that
                never comes back is removed after ``remove_after_seconds`` (membership.py),
                and then the gap is declared.
        """
        self._everyone_reachable = everyone_reachable
        actions: list[Pull | Gap] = []
        origins = set(self.claimed) | set(held)
        for holding in self.peers.values():
            origins.update(holding.high)
        for avoid, until in list(self._avoid.items()):
            if until <= now:
                del self._avoid[avoid]
        retired = self.retired
        for origin in sorted(origins):
            if origin in retired:
                continue
            self._plan_origin(origin, vector.get(origin, 0), held.get(origin), now, actions)
        return actions

    def _plan_origin(
        self, origin: str, have: int, held: int | None, now: float, actions: list[Pull | Gap]
    ) -> None:
        holders = [(p, h) for p, h in self.peers.items() if h.high.get(origin, 0) > have]
        target = max(
            [self.claimed.get(origin, 0), held or 0, *(h.high[origin] for _, h in holders)]
        )
        if target <= have:
            self._active.pop(origin, None)
            self._progress.pop(origin, None)
            return
        progress = self._progress.get(origin)
        if progress is None or progress[0] != have:
            self._progress[origin] = progress = (have, now)
        active = self._active.get(origin)
        if active is not None:
            if active.progress_seq != have:
                active.progress_seq = have
                active.progress_at = now
            if active.peer not in self.peers:
                active = None
                del self._active[origin]
            elif now - active.progress_at > self.stall_seconds:
                self.stalls += 1
                self._avoid[(active.peer, origin)] = now + self.stall_seconds
                active = None
                del self._active[origin]
        if active is None:
            if held is None and now - progress[1] < self.patience_seconds:
                return  # no hole yet: what is missing may still be on its way
            candidates = [
                (h.high[origin], p)
                for p, h in holders
                if h.holds(origin, have + 1) and self._avoid.get((p, origin), 0) <= now
            ]
            if not candidates:
                self._maybe_gap(origin, have, held, holders, progress[1], now, actions)
                return
            _, peer = max(candidates)
            active = self._active[origin] = _Active(peer, have, 0, now, have)
        active.requested = max(active.requested, have)
        limit = self.peers[active.peer].high.get(origin, 0)
        while active.outstanding < self.window and active.requested < limit:
            count = min(self.page_events, limit - active.requested)
            actions.append(Pull(active.peer, origin, active.requested, count))
            self.pulls += 1
            active.requested += count
            active.outstanding += 1

    def _maybe_gap(
        self,
        origin: str,
        have: int,
        held: int | None,
        holders: list[tuple[str, Holding]],
        since: float,
        now: float,
        actions: list[Pull | Gap],
    ) -> None:
        if any(h.holds(origin, have + 1) for _, h in holders):
            return  # a holder is only avoided for now: ask it again later
        topics: tuple[str, ...] | None = None
        if holders:
            # The nearest holder lost the start of the range from its log: ask it which
            # topics that range was on (a one-event pull it answers with its index).
            low, peer = min((h.low.get(origin, 1), p) for p, h in holders)
            lost = self._lost.get(origin)
            if lost is not None and lost[0] == have and lost[1] >= low - 1:
                topics = lost[2]
            elif now - self._probed.get(origin, -1e18) > self.stall_seconds:
                self._probed[origin] = now
                actions.append(Pull(peer, origin, have, 1))
        if now - since < self.gap_grace_seconds or not self._everyone_reachable:
            return
        nearest = [h.low.get(origin, 1) for _, h in holders]
        if held is not None:
            nearest.append(held)
        up_to = min(nearest) - 1 if nearest else self.claimed.get(origin, 0)
        if up_to > have:
            self.gaps += 1
            actions.append(Gap(origin, up_to, topics))
            self._progress[origin] = (up_to, now)
            self._lost.pop(origin, None)

    def active(self) -> dict[str, str]:
        """Per origin being pulled, the peer asked."""
        return {o: a.peer for o, a in self._active.items()}
