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

import trio

from ..core import positions
from ..core.errors import BadEventId
from .events import Event
from .state import HubBase

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

    def skip_remote(self, origin: str, up_to: int) -> None:
        """Give up on an origin's events up to ``up_to``: no node can supply them any more.

        Every subscriber is told in-band (``broker.gap``); resumes from positions before
        ``up_to`` are reported as not exact from now on.
        """
        if up_to <= self._vector.get(origin, 0):
            return
        lost = up_to - self._vector.get(origin, 0)
        self._vector[origin] = up_to
        self._accepted[origin] = max(self._accepted.get(origin, 0), up_to)
        self.floor[origin] = max(self.floor.get(origin, 0), up_to)
        self.lost += lost
        self._progress.set()
        log.warning("gave up on %d events of origin %s (up to %d)", lost, origin, up_to)
        for subscriber in list(self._subscribers):
            subscriber.offer_notice(
                subscriber.codec.notice(
                    "broker.gap",
                    subscriber.position,
                    {"origin": origin, "lost": lost, "position": subscriber.position},
                ),
                subscriber.position,
            )

    def log_after(self, origin: str, seq: int, limit: int) -> tuple[list[Event], int]:
        """Up to ``limit`` events of ``origin`` after ``seq`` from the replication log.

        Returns:
            ``(events, first_available)``: ``first_available`` is the oldest seq still in
            the log (events between ``seq`` and it are gone from this node).
        """
        events = self._logs.get(origin)
        if not events:
            return [], self._vector.get(origin, 0) + 1
        first = events[0].seq
        index = min(max(0, seq + 1 - first), len(events))
        while index > 0 and events[index - 1].seq > seq:  # a skipped range shifted seqs
            index -= 1
        while index < len(events) and events[index].seq <= seq:
            index += 1
        return list(islice(events, index, index + limit)), first

    def behind(self, resume_from: str | None) -> bool:
        """This node has delivered less of some origin than the client has seen."""
        if resume_from is None:
            return False
        try:
            requested = positions.parse_position(resume_from)
        except BadEventId:
            return False
        vector = self._vector
        return any(vector.get(o, 0) < s for o, s in requested.items())

    async def wait_caught_up(self, resume_from: str, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until this node has delivered what the client saw."""
        with trio.move_on_after(timeout):
            while self.behind(resume_from):
                await self._progress.wait()
                self._progress = trio.Event()
            return True
        return False
