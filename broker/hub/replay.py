"""Where a new stream starts and what it is sent first (sans-IO).

A subscriber either resumes (it sends an id) or starts fresh, optionally asking for the
recent past (``last=N`` events, or ``since`` a time). Either way the plan is a start
position and a list of events in this node's delivery order, such that resuming from the
start position later yields the same events again: the ``broker.start`` id never lets a
client skip or repeat anything.

Retained events (a topic's current state, one per event type) and a closed topic's final
event come first for a fresh subscriber, re-stamped with the start position as their id:
they are older than the start position, and an id that moved the client backwards would
make a later resume repeat events. A resuming client gets them only if it has not seen
them and history no longer holds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..core import positions
from ..core.errors import BadEventId
from .events import Event
from .history import TopicHistory, merge


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where a subscriber without a resume id starts: live (default), or the recent past.

    Attributes:
        last: replay the newest ``last`` events of its topics (merged), then live.
        since: replay events published at or after this time (epoch seconds), then live.
    """

    last: int | None = None
    since: float | None = None


class TopicState(Protocol):
    """What the planner needs of one topic."""

    history: TopicHistory
    retained: dict[str | None, Event]
    final: Event | None


@dataclass(slots=True)
class StartPlan:
    """The outcome of planning a stream start.

    Attributes:
        notice: ``broker.start`` or ``broker.reset``.
        payload: the notice's data.
        position: the start position (the notice's id).
        first: retained/final events sent right after the notice, with ``position`` as id.
        events: events replayed from history, with their own ids.
        ended: every requested topic is closed and the client will have its final event.
    """

    notice: str
    payload: dict[str, object]
    position: str
    first: list[Event]
    events: list[Event]
    ended: bool = False


def _suffix_position(vector: Mapping[str, int], events: Sequence[Event]) -> dict[str, int]:
    """The position right before ``events``, a suffix of the topics' delivery order."""
    start = dict(vector)
    for event in reversed(events):
        start[event.origin] = event.seq - 1
    return start


def plan_start(
    vector: Mapping[str, int],
    topics: Sequence[TopicState],
    *,
    resume_from: str | None,
    start_at: StartAt | None = None,
    floor: Mapping[str, int] | None = None,
    retired: Mapping[str, int] | None = None,
    cut_short: Mapping[str, int] | None = None,
) -> StartPlan:
    """Plan the start of a stream over ``topics`` on a node at position ``vector``.

    ``floor`` holds, per origin, the seq up to which this node may lack events (it joined
    late or gave up on a gap): a resume from below it is not exact.

    ``retired`` holds origins that left the vector (their node restarted with a new origin
    or left the cluster, and their events left history), with their last seq. An id that
    names one is read at ``min(its seq, last seq)``; an id that does not name one (every id
    issued after it retired) is read as having seen all of it. Either way the topics'
    eviction marks decide whether the resume is exact.

    ``cut_short`` holds the origins of epochs an operating-system crash cut short
    (``engines/durable.py``), at the last seq that survived: a client past that saw events
    that are gone (reset reason ``lost``).
    """
    retained = sorted(
        {
            id(e): e
            for t in topics
            for e in [*t.retained.values(), *([t.final] if t.final else [])]
        }.values(),
        key=lambda e: e.index,
    )
    all_closed = bool(topics) and all(t.final is not None for t in topics)
    if resume_from is None:
        events: list[Event] = []
        if start_at is not None and (start_at.last is not None or start_at.since is not None):
            events = merge([list(t.history.events) for t in topics])
            if start_at.since is not None:
                since = start_at.since
                cut = next((i for i, e in enumerate(events) if e.published_at >= since), None)
                events = [] if cut is None else events[cut:]
            if start_at.last is not None:
                events = events[max(0, len(events) - start_at.last) :] if start_at.last else []
        start = _suffix_position(vector, events)
        position = positions.format_position(start)
        replayed = {id(e) for e in events}
        first = [e for e in retained if id(e) not in replayed]
        return StartPlan(
            "broker.start",
            {"position": position, "resumed": False},
            position,
            first,
            events,
            ended=all_closed,
        )
    try:
        requested = positions.parse_position(resume_from)
    except BadEventId:
        position = positions.format_position(vector)
        payload: dict[str, object] = {
            "position": position,
            "requested": resume_from[:200],
            "reason": "unparsable",
        }
        return StartPlan("broker.reset", payload, position, retained, [], ended=all_closed)
    known = {o: min(s, vector[o]) for o, s in requested.items() if o in vector}
    retired = retired or {}
    for origin, last in retired.items():
        known[origin] = min(requested.get(origin, last), last)
    # An origin this node never heard of is harmless if the client saw none of its events.
    unknown = any(s > 0 for o, s in requested.items() if o not in vector and o not in retired)
    cut_short = cut_short or {}
    lost = any(s > cut_short[o] for o, s in requested.items() if o in cut_short)
    exact = not unknown and not lost and all(known.get(o, 0) >= f for o, f in (floor or {}).items())
    missed = []
    for topic in topics:
        topic_events, topic_exact = topic.history.after(known)
        missed.append(topic_events)
        exact = exact and topic_exact
    events = merge(missed)
    start = {o: known.get(o, 0) for o in vector}
    position = positions.format_position(start)
    replayed = {id(e) for e in events}
    first = [e for e in retained if id(e) not in replayed and e.seq > known.get(e.origin, 0)]
    if exact:
        return StartPlan(
            "broker.start",
            {"position": position, "resumed": True},
            position,
            first,
            events,
            ended=all_closed,
        )
    reason = "unknown" if unknown else "lost" if lost else "evicted"
    payload = {"position": position, "requested": resume_from, "reason": reason}
    return StartPlan("broker.reset", payload, position, first, events, ended=all_closed)


def has_everything(
    vector: Mapping[str, int], topics: Sequence[TopicState], resume_from: str
) -> bool:
    """Every topic is closed and the client's id is at or past each final event.

    Such a client is answered ``204 No Content``, which tells an ``EventSource`` to stop
    reconnecting for good.
    """
    if not topics or any(t.final is None for t in topics):
        return False
    try:
        requested = positions.parse_position(resume_from)
    except BadEventId:
        return False
    return all(
        requested.get(t.final.origin, 0) >= t.final.seq for t in topics if t.final is not None
    )
