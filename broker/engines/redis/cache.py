"""A node's copy of the tail of each topic it serves, and where a stream starts (sans-IO).

Theory of operation. A node reads a topic's stream only while it has local subscribers
for it (the topic is *tracked*). For each tracked topic it keeps a :class:`TopicCache`:
the entries it has read, a contiguous run of the stream ending at ``last``, the newest
entry this node delivered. The reader appends to it in stream order and hands each new
entry to the hub; a stream start is planned from it synchronously (:func:`plan_start`), so
registering a subscriber and computing its replay happen in one step with no checkpoint
between them: nothing can fall between replay and live.

Before a stream starts, the engine makes sure the cache reaches back far enough for the
client's position (it reads the missing part of the stream and prepends it), so the plan
itself never waits.

Exactness. A client at position P (a packed entry id) on a topic has seen every entry up
to P. Resuming is exact when P is an entry this node knows the stream still holds (every
entry after it is then still there: Redis trims streams from the oldest end only), or
when P is 0 and the cache holds the stream from its very first entry. Otherwise the
stream starts with ``broker.reset``: ``evicted`` when P is older than what the stream
still holds, ``unknown`` when P is not an entry of this stream (Redis restarted empty,
another deployment's id).

Per-topic order is the stream's order on every node. Across the topics of one
subscription, live events come in the order this node read them and replays merge by
entry id; each topic's position is kept separately in the id, so any interleaving
resumes exactly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Protocol

from ...core.errors import BadEventId
from ...hub.events import Event
from ...hub.replay import StartAt, StartPlan
from . import ids


class TopicCache:
    """The entries of one tracked topic this node has read, oldest first.

    Args:
        topic: the topic name.
        size: entries to keep; the cache may hold up to twice as many between trims, so a
            stream start that prepared its reads is not undone by a burst.
    """

    __slots__ = (
        "events",
        "from_start",
        "idle_since",
        "ids",
        "last",
        "last_token",
        "pinned_until",
        "ready",
        "size",
        "tag",
        "topic",
    )

    def __init__(self, topic: str, size: int) -> None:
        self.topic = topic
        self.tag = ids.tag(topic)
        self.size = max(1, size)
        self.ids: list[int] = []
        self.events: list[Event] = []
        #: The newest entry delivered on this node (``ZERO``: none yet).
        self.last = ids.ZERO
        self.last_token = ids.token(self.tag, ids.ZERO)
        #: The cache holds the stream from its first entry ever (nothing was trimmed).
        self.from_start = False
        #: Loaded and read by the reader (set once tracking has started).
        self.ready = False
        #: A stream start is being prepared: do not trim before this time.
        self.pinned_until = 0.0
        self.idle_since: float | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, events: Sequence[Event], *, from_start: bool) -> None:
        """Fill an empty cache with a contiguous run of entries (oldest first)."""
        self.ids = [e.seq for e in events]
        self.events = list(events)
        self.from_start = from_start
        if events:
            self._set_last(events[-1].seq)

    def append(self, event: Event, now: float) -> None:
        """Add the next entry the reader delivered."""
        self.ids.append(event.seq)
        self.events.append(event)
        self.last = event.seq
        self.last_token = event.id
        if len(self.ids) > 2 * self.size and now >= self.pinned_until:
            cut = len(self.ids) - self.size
            del self.ids[:cut]
            del self.events[:cut]
            self.from_start = False

    def prepend(self, events: Sequence[Event], *, from_start: bool) -> bool:
        """Add older entries read from the stream, up to and including the oldest held.

        Returns:
            whether they were contiguous with the cache and were added.
        """
        if not events:
            return False
        if self.ids:
            if events[-1].seq != self.ids[0]:
                return False
            older = [e for e in events if e.seq < self.ids[0]]
        else:
            older = list(events)
            self._set_last(older[-1].seq)
        self.ids[:0] = [e.seq for e in older]
        self.events[:0] = older
        self.from_start = from_start
        return True

    def reset(self) -> None:
        """The stream no longer holds what this cache holds (trimmed past it, or lost)."""
        self.ids.clear()
        self.events.clear()
        self.from_start = False
        self._set_last(ids.ZERO)

    def _set_last(self, packed: int) -> None:
        self.last = packed
        self.last_token = ids.token(self.tag, packed)

    def covers(self, position: int) -> bool:
        """Whether resuming from ``position`` can be judged from the cache alone."""
        if position == ids.ZERO:
            return self.from_start
        return bool(self.ids) and self.ids[0] <= position <= self.last

    def after(self, position: int) -> tuple[list[Event], str | None]:
        """The cached events after ``position`` and why the resume is not exact, if not.

        Returns:
            ``(events, reason)``: ``reason`` is ``None`` (exact), ``"evicted"`` or
            ``"unknown"``.
        """
        if position == ids.ZERO:
            return list(self.events), None if self.from_start else "evicted"
        if not self.ids or position > self.last:
            return [], "unknown"
        if position < self.ids[0]:
            return list(self.events), "evicted"
        index = bisect_left(self.ids, position)
        if self.ids[index] != position:
            return self.events[index:], "unknown"
        return self.events[index + 1 :], None

    def holds(self, packed: int) -> bool:
        """Whether the entry ``packed`` is in the cache (was delivered here)."""
        index = bisect_left(self.ids, packed)
        return index < len(self.ids) and self.ids[index] == packed

    def before(self, packed: int) -> int:
        """The entry right before ``packed`` (``ZERO`` when it is the oldest held)."""
        index = bisect_left(self.ids, packed)
        return self.ids[index - 1] if index > 0 else ids.ZERO


def split_read(last: int, entries: Sequence[Event]) -> tuple[list[Event], bool]:
    """Which entries of an inclusive read from ``last`` are new, and whether ``last`` is gone.

    The reader always reads from its last entry inclusive, so it learns for free whether
    the stream still holds it. If not (trimmed past it while this node could not read, or
    Redis lost the stream), everything the stream now holds is new to this node and the
    subscribers must be told that events may be missing.
    """
    if last == ids.ZERO:
        return list(entries), False
    if entries and entries[0].seq == last:
        return list(entries[1:]), False
    return list(entries), True


class TopicState(Protocol):
    """What the planner needs of the hub's state of one topic."""

    retained: dict[str | None, Event]
    final: Event | None


def start_positions(caches: Mapping[str, TopicCache]) -> dict[str, int]:
    return {topic: cache.last for topic, cache in caches.items()}


def plan_start(
    caches: Mapping[str, TopicCache],
    states: Mapping[str, TopicState],
    *,
    resume_from: str | None,
    start_at: StartAt | None = None,
) -> StartPlan:
    """Plan the start of a stream over the topics of ``caches`` (see module docstring).

    Args:
        caches: the cache of every topic of the subscription (tracked, ready).
        states: the hub's state of each topic (retained and final events).
        resume_from: the client's id, if it resumes.
        start_at: ``last``/``since`` for a client that does not resume.
    """
    topics = sorted(caches)
    retained_all = _retained(states, topics)
    all_closed = bool(topics) and all(
        (s := states.get(t)) is not None and s.final is not None for t in topics
    )
    current = start_positions(caches)
    if resume_from is None:
        events: list[Event] = []
        start = dict(current)
        if start_at is not None and (start_at.last is not None or start_at.since is not None):
            events = _merge([caches[t].events for t in topics])
            if start_at.since is not None:
                since = start_at.since
                events = [e for e in events if e.published_at >= since]
            if start_at.last is not None:
                events = events[max(0, len(events) - start_at.last) :] if start_at.last else []
            for event in reversed(events):
                start[event.topic] = caches[event.topic].before(event.seq)
        position = ids.format_positions(start)
        replayed = {(e.topic, e.seq) for e in events}
        first = [e for e in retained_all if (e.topic, e.seq) not in replayed]
        return StartPlan(
            "broker.start",
            {"position": position, "resumed": False},
            position,
            first,
            _restamp(events, start, len(topics)),
            ended=all_closed,
        )
    reason: str | None = None
    try:
        parsed = ids.parse_position(resume_from)
    except BadEventId:
        requested: dict[str, int] = {}
        reason = "unparsable"
    else:
        requested, usable = ids.requested_positions(topics, parsed)
        if not usable:
            reason = "unknown"
    if reason is not None:
        position = ids.format_positions(current)
        payload: dict[str, object] = {
            "position": position,
            "requested": resume_from[:200],
            "reason": reason,
        }
        return StartPlan("broker.reset", payload, position, retained_all, [], ended=all_closed)
    start = dict(current)
    missed = []
    for topic in topics:
        if topic not in requested:
            continue  # the client never followed it: live from now on
        wanted = requested[topic]
        topic_events, topic_reason = caches[topic].after(wanted)
        if topic_reason is not None and reason != "unknown":
            reason = topic_reason
        missed.append(topic_events)
        start[topic] = min(wanted, caches[topic].last)
    events = _merge(missed)
    position = ids.format_positions(start)
    replayed = {(e.topic, e.seq) for e in events}
    first = [
        e
        for e in retained_all
        if (e.topic, e.seq) not in replayed and e.seq > requested.get(e.topic, current[e.topic])
    ]
    replay = _restamp(events, start, len(topics))
    if reason is None:
        return StartPlan(
            "broker.start",
            {"position": position, "resumed": True},
            position,
            first,
            replay,
            ended=all_closed,
        )
    payload = {"position": position, "requested": resume_from, "reason": reason}
    return StartPlan("broker.reset", payload, position, first, replay, ended=all_closed)


def has_everything(
    topics: Sequence[str], states: Mapping[str, TopicState], resume_from: str
) -> bool:
    """Every topic is closed and the client's id is at or past each final event."""
    if not topics or any((s := states.get(t)) is None or s.final is None for t in topics):
        return False
    try:
        parsed = ids.parse_position(resume_from)
    except BadEventId:
        return False
    requested, usable = ids.requested_positions(topics, parsed)
    if not usable:
        return False
    return all(
        requested.get(t, ids.ZERO) >= final.seq
        for t in topics
        if (final := states[t].final) is not None
    )


def variant_id(topics: Sequence[str], caches: Mapping[str, TopicCache]) -> str:
    """The id of the event just delivered, for a subscriber of ``topics`` (topic order).

    Right after the reader delivered an entry of topic T, ``caches[T].last`` is that entry
    and every other topic's ``last`` is what this node delivered of it: exactly what every
    subscriber of this topic set has been given, so they share the id (encoded once per
    event and topic set). Topics not tracked yet are left out (they start live).
    """
    return ".".join(c.last_token for t in topics if (c := caches.get(t)) is not None)


def _retained(states: Mapping[str, TopicState], topics: Sequence[str]) -> list[Event]:
    found: dict[tuple[str, int], Event] = {}
    for topic in topics:
        state = states.get(topic)
        if state is None:
            continue
        for event in [*state.retained.values(), *([state.final] if state.final else [])]:
            found[(event.topic, event.seq)] = event
    return sorted(found.values(), key=lambda e: (e.seq, e.topic))


def _merge(lists: Sequence[Sequence[Event]]) -> list[Event]:
    nonempty = [list(events) for events in lists if events]
    if len(nonempty) == 1:
        return nonempty[0]
    return sorted((e for events in nonempty for e in events), key=lambda e: (e.seq, e.topic))


def _restamp(events: list[Event], start: Mapping[str, int], topic_count: int) -> list[Event]:
    """Replayed events with the ids of a subscription of ``topic_count`` topics.

    A single-topic subscription shares the events as they are (their id is their token);
    a multi-topic one gets copies whose id carries every topic's position right after
    the event.
    """
    if topic_count <= 1 or not events:
        return events
    vector = dict(start)
    out = []
    for event in events:
        vector[event.topic] = event.seq
        out.append(event.with_id(ids.format_positions(vector)))
    return out


def position_after(caches: Mapping[str, TopicCache]) -> str:
    """The id of a subscription that has everything this node delivered."""
    return ids.format_positions(start_positions(caches))


__all__ = [
    "TopicCache",
    "has_everything",
    "plan_start",
    "position_after",
    "split_read",
    "variant_id",
]
