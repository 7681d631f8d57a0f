"""Replication for the gossip mesh (``cluster/``): events other nodes accepted.

The position vector has one entry per origin; the cluster delivers each origin's events
in order (:meth:`~Replicated.deliver_remote`), gives up on what no node can supply
(:meth:`~Replicated.skip_remote`), and serves peers from the replication log
(:meth:`~Replicated.log_after`). A client coming from another node waits until this one
has caught up with what it saw (:meth:`~Replicated.wait_caught_up`).
"""

from __future__ import annotations

import logging
import time
from itertools import islice
from typing import Final

import trio

from ..core import positions
from ..core.errors import BadEventId
from .events import Event
from .state import HubBase
from .subscriber import Subscriber

#: Retired origins remembered for resumes that name them; an id naming an origin
#: forgotten beyond this is answered ``broker.reset`` (reason ``unknown``).
MAX_RETIRED: Final = 10_000

# The hub's logger: records keep the name they had before the hub was split by concept.
log = logging.getLogger("broker.hub")


class Replicated(HubBase):
    """The hub's side of mesh replication (used by ``cluster/``)."""

    # -- replication (used by the cluster) --------------------------------------------------

    @property
    def vector(self) -> dict[str, int]:
        """This node's position vector: per origin, the last seq accepted here (read-only).

        The cluster orders replication by it. Without a journal that is the last seq
        delivered; with one, events are accepted before their commit and delivered after.
        """
        return self._accepted

    def deliver_remote(
        self,
        *,
        origin: str,
        seq: int,
        topic: str,
        data: str,
        event_type: str | None,
        is_json: bool,
        published_at: float,
        retain: bool = False,
        final: bool = False,
    ) -> Event | None:
        """Deliver an event another node accepted. Never blocks.

        The caller delivers each origin's events in seq order (``seq == vector[origin] + 1``,
        see ``cluster/replication.py``); this node's id for it is its vector right after.
        An event for a topic this node already saw closed is counted but not delivered.
        """
        accepted = self._accepted  # the same dict as _vector without a journal
        if origin == self.origin or seq != accepted.get(origin, 0) + 1:
            raise ValueError(f"out of order: {origin}-{seq} after {accepted.get(origin, 0)}")
        self._index += 1
        accepted[origin] = seq
        self.replicated_in += 1
        self.replication_delay[origin] = time.time() - published_at
        state = self._topics.get(topic)
        if self.journal is None and state is not None and state.final is not None:
            self._progress.set()
            return None
        event = Event(
            topic=topic,
            event_type=event_type,
            data=data,
            is_json=is_json,
            origin=origin,
            seq=seq,
            index=self._index,
            event_id=positions.format_position(accepted),
            published_at=published_at,
            retain=retain,
            final=final,
        )
        if self.journal is not None:
            # Kept in this node's store too (a restart keeps its position vector); it is
            # delivered once committed, in order with this node's own events.
            # (An event for a topic closed by then is skipped at delivery.)
            self.journal.append_nowait([event])
            return event
        self._progress.set()
        self._deliver(event)
        return event

    def skip_remote(self, origin: str, up_to: int, topics: list[str] | None = None) -> None:
        """Give up on an origin's events up to ``up_to``: no node can supply them any more.

        The subscribers that may have missed one of them are told in-band (``broker.gap``):
        those of ``topics`` when the holder knew which topics the range touched, else every
        subscriber whose position is below ``up_to`` (nobody knows the topics of events no
        reachable node holds, so any stream may have missed one). Resumes from positions
        before ``up_to`` are reported as not exact from now on.
        """
        have = self._vector.get(origin, 0)
        if up_to <= have:
            return
        lost = up_to - have
        self._vector[origin] = up_to
        self._accepted[origin] = max(self._accepted.get(origin, 0), up_to)
        self.floor[origin] = max(self.floor.get(origin, 0), up_to)
        self.lost += lost
        self._progress.set()
        log.warning(
            "gave up on %d events of origin %s (up to %d): no reachable peer holds them; topics %s",
            lost,
            origin,
            up_to,
            "unknown" if topics is None else ", ".join(topics[:10]) or "none",
        )
        if topics is None:
            subscribers = list(self._subscribers)
        else:
            chosen: dict[Subscriber, None] = {}
            for topic in topics:
                state = self._topics.get(topic)
                if state is not None:
                    chosen.update(state.subscribers)
            subscribers = list(chosen)
        for subscriber in subscribers:
            position = subscriber.position
            try:
                if positions.parse_position(position).get(origin, 0) >= up_to:
                    continue  # it resumed from past the gap: it missed nothing
            except BadEventId:
                pass
            subscriber.offer_notice(
                subscriber.codec.notice(
                    "broker.gap",
                    position,
                    {
                        "origin": origin,
                        "lost": lost,
                        "topics": topics,
                        "position": position,
                    },
                ),
                position,
            )

    def held_from(self, origin: str) -> int:
        """The lowest seq of ``origin`` this node can serve from its log without a hole."""
        events = self._logs.get(origin)
        after_skip = self.floor.get(origin, 0) + 1
        if not events:
            return self._vector.get(origin, 0) + 1
        return max(events[0].seq, after_skip)

    def holdings(self) -> dict[str, int]:
        """Per origin whose lowest held seq is not 1, that seq (the catch-up digest)."""
        low = {}
        for origin in self._vector:
            first = self.held_from(origin)
            if first != 1:
                low[origin] = first
        return low

    def last_published_at(self, origin: str) -> float | None:
        """Wall-clock publish time of the newest event of ``origin`` held here, if any."""
        events = self._logs.get(origin)
        return events[-1].published_at if events else None

    def retire_origin(self, origin: str) -> int:
        """Take a retired origin out of the vector, so ids stop naming it; its last seq.

        Its events leave this node's histories and log (each topic marks them evicted, so a
        resume from before them is reported as not exact), and it is remembered in
        :attr:`retired` (the newest ``MAX_RETIRED``) for resumes from ids that name it.
        Only for another node's origin that will send no more events.
        """
        if origin == self.origin or origin not in self._vector:
            return 0
        last = self._vector.pop(origin)
        self.floor.pop(origin, None)
        self._logs.pop(origin, None)
        self.replication_delay.pop(origin, None)
        for state in self._topics.values():
            history = state.history
            if any(e.origin == origin for e in history.events):
                kept = [e for e in history.events if e.origin != origin]
                dropped = max(e.seq for e in history.events if e.origin == origin)
                history.events.clear()
                history.events.extend(kept)
                history.evicted[origin] = max(history.evicted.get(origin, 0), dropped)
        retired = self.retired
        retired[origin] = last
        while len(retired) > MAX_RETIRED:
            del retired[next(iter(retired))]
        self._progress.set()
        log.info("origin %s retired at seq %d: ids no longer name it", origin, last)
        return last

    def log_after(self, origin: str, seq: int, limit: int) -> tuple[list[Event], int]:
        """Up to ``limit`` events of ``origin`` after ``seq`` from the replication log.

        Returns:
            ``(events, first_available)``: ``first_available`` is the oldest seq held
            without a hole (:meth:`held_from`); if ``seq + 1`` is below it, no events.
        """
        first = self.held_from(origin)
        events = self._logs.get(origin)
        if not events or seq + 1 < first:
            return [], first
        index = min(max(0, seq + 1 - events[0].seq), len(events))
        while index > 0 and events[index - 1].seq > seq:  # a skipped range shifted seqs
            index -= 1
        while index < len(events) and events[index].seq <= seq:
            index += 1
        return list(islice(events, index, index + limit)), first

    def lost_topics(self, origin: str, after: int, before: int) -> list[str] | None:
        """Topics that had ``origin``'s events ``after+1..before-1`` here, if knowable.

        A topic's history remembers the highest seq it evicted per origin, so a topic whose
        history holds none of that range and evicted nothing past ``after`` had none of it.
        ``None`` if this node itself lacks part of the range (it skipped it).
        """
        if self.floor.get(origin, 0) > after:
            return None
        touched = []
        for name, state in self._topics.items():
            history = state.history
            if history.evicted.get(origin, 0) > after or any(
                e.origin == origin and after < e.seq < before for e in history.events
            ):
                touched.append(name)
        return sorted(touched)

    def behind(self, resume_from: str | None) -> bool:
        """This node has delivered less of some origin than the client has seen."""
        if resume_from is None:
            return False
        try:
            requested = positions.parse_position(resume_from)
        except BadEventId:
            return False
        vector = self._vector
        retired = self.retired
        return any(vector.get(o, 0) < s for o, s in requested.items() if o not in retired)

    async def wait_caught_up(self, resume_from: str, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until this node has delivered what the client saw."""
        with trio.move_on_after(timeout):
            while self.behind(resume_from):
                await self._progress.wait()
                self._progress = trio.Event()
            return True
        return False
