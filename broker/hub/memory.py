"""The memory engine: the hub keeps each topic's history itself and mints the ids.

The default engine, and the mesh's: ids are this node's position vector (``core.positions``),
each topic keeps its last ``history_size`` events in memory, and publishing is synchronous
(``Hub.publish_nowait``, no checkpoint). The gossip mesh (``broker.cluster``) adds events of
other origins on top (``replication.py``); a client that comes from another node may have to
wait for this one to catch up before its stream can start (``prepare``); if it cannot in
``catchup_seconds``, the client is asked to retry (``CatchingUp``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core import positions
from ..core.items import PublishItem
from .engine import CatchingUp
from .replay import StartAt, StartPlan, has_everything, plan_start

if TYPE_CHECKING:  # the hub composes its engine: only the types are needed here
    from .state import HubBase, _Topic


class MemoryEngine:
    """History in the hub's memory, ids from the hub's position vector."""

    synchronous = True

    def __init__(self, hub: HubBase) -> None:
        self.hub = hub
        self.history_size = hub.history_size

    async def prepare(
        self,
        topics: frozenset[str],
        resume_from: str | None,
        start_at: StartAt | None,
        catchup_seconds: float,
    ) -> None:
        hub = self.hub
        if catchup_seconds and hub.behind(resume_from):
            assert resume_from is not None
            if not await hub.wait_caught_up(resume_from, catchup_seconds):
                # Starting behind the client would send ids that move it backwards, and the
                # events it already saw would come again once this node has them.
                raise CatchingUp(
                    "this node has not yet delivered every event this client saw; "
                    "retry (here or on another node)"
                )

    def plan_start(
        self,
        topics: frozenset[str],
        states: Sequence[_Topic],
        resume_from: str | None,
        start_at: StartAt | None,
    ) -> StartPlan:
        hub = self.hub
        return plan_start(
            hub._vector,
            states,
            resume_from=resume_from,
            start_at=start_at,
            floor=hub.floor,
            retired=self._retired_view(),
            cut_short=hub.cut_short,
        )

    def _retired_view(self) -> dict[str, int]:
        """Retired origins, and those about to retire at their last seq (see replay.py)."""
        hub = self.hub
        if not hub.retiring:
            return hub.retired
        vector = hub._vector
        about = {o: vector[o] for o in hub.retiring if o in vector}
        return {**hub.retired, **about}

    def end_position(self, plan: StartPlan) -> str:
        """The id that ``broker.end`` carries: this node's position after the replay."""
        return positions.format_position(self.hub._vector)

    def stream_is_over(self, topics: Sequence[str], resume_from: str) -> bool:
        states = [self.hub._topics.get(t) for t in topics]
        present = [s for s in states if s is not None]
        if len(present) != len(states):
            return False
        return has_everything(self.hub._vector, present, resume_from)

    def track_nowait(self, topics: Sequence[str]) -> None:
        pass  # every event this node delivers is already in its memory

    async def append(
        self, items: Sequence[PublishItem], *, retain: bool = False, final: bool = False
    ) -> list[str]:
        """Publish now, with no checkpoint: the events are delivered before this returns."""
        hub = self.hub
        if len(items) == 1:
            item = items[0]
            event = hub.publish_nowait(
                item.topic, item.data, event_type=item.event_type, is_json=item.is_json,
                retain=retain, final=final,
            )  # fmt: skip
            return [event.id]
        return [e.id for e in hub.publish_batch_nowait(items)]


class JournalEngine(MemoryEngine):
    """The memory engine with a durable log under it (``[storage] kind = "durable"``).

    Ids, history and replay are the memory engine's, so the mesh and resume work unchanged;
    what differs: a publish awaits its group commit (``Hub._publish_durably``, delivery
    after the commit), and topics that left memory (expiry, a restart) are read back from
    the journal before a stream over them is planned.
    """

    synchronous = False

    async def prepare(
        self,
        topics: frozenset[str],
        resume_from: str | None,
        start_at: StartAt | None,
        catchup_seconds: float,
    ) -> None:
        hub = self.hub
        missing = [t for t in topics if t not in hub._topics or t in hub._partial]
        if missing:  # expired, or not read since the start: the store has them
            await hub.load_topics(missing)
        await super().prepare(topics, resume_from, start_at, catchup_seconds)

    async def append(
        self, items: Sequence[PublishItem], *, retain: bool = False, final: bool = False
    ) -> list[str]:
        """Return once the events are committed (and delivered); raises Unavailable."""
        return await self.hub._publish_durably(items, retain, final)
