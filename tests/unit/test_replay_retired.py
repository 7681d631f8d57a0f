"""Resuming from ids around a retired origin (sans-IO, replay.plan_start; issue 20)."""

from dataclasses import dataclass, field

from broker.core import positions
from broker.hub.events import Event
from broker.hub.history import TopicHistory
from broker.hub.replay import plan_start


@dataclass
class Topic:
    history: TopicHistory = field(default_factory=lambda: TopicHistory(100))
    retained: dict = field(default_factory=dict)
    final: Event | None = None


def event(origin, seq, index):
    return Event(
        topic="t",
        event_type=None,
        data=f"{origin}{seq}",
        is_json=False,
        origin=origin,
        seq=seq,
        index=index,
        event_id="",
        published_at=0.0,
    )


def setup():
    """Origin ``old`` published 1..3 and retired (its events left history); ``new`` 1..2."""
    topic = Topic()
    for index, (origin, seq) in enumerate([("old", 1), ("old", 2), ("old", 3)], 1):
        topic.history.append(event(origin, seq, index))
    kept = [e for e in topic.history.events if e.origin != "old"]
    topic.history.events.clear()
    topic.history.events.extend(kept)
    topic.history.evicted["old"] = 3
    for index, seq in enumerate([1, 2], 4):
        topic.history.append(event("new", seq, index))
    return topic, {"new": 2}, {"old": 3}


def test_an_id_naming_a_retired_origin_past_its_last_event_resumes_exactly():
    topic, vector, retired = setup()
    plan = plan_start(vector, [topic], resume_from="new-1.old-3", retired=retired)
    assert plan.notice == "broker.start"
    assert [e.data for e in plan.events] == ["new2"]
    assert positions.parse_position(plan.position) == {"new": 1}  # the old origin is gone


def test_an_id_naming_a_retired_origin_before_events_it_missed_is_a_reset():
    topic, vector, retired = setup()
    plan = plan_start(vector, [topic], resume_from="new-0.old-1", retired=retired)
    assert plan.notice == "broker.reset"
    assert plan.payload["reason"] == "evicted"
    assert [e.data for e in plan.events] == ["new1", "new2"]


def test_an_id_issued_after_retirement_does_not_name_it_and_resumes_exactly():
    topic, vector, retired = setup()
    plan = plan_start(vector, [topic], resume_from="new-1", retired=retired)
    assert plan.notice == "broker.start"
    assert [e.data for e in plan.events] == ["new2"]


def test_without_the_retired_table_such_an_id_is_unknown():
    topic, vector, _ = setup()
    plan = plan_start(vector, [topic], resume_from="new-1.old-3")
    assert plan.notice == "broker.reset"
    assert plan.payload["reason"] == "unknown"


def test_an_origin_about_to_retire_is_seen_in_full_by_an_id_that_does_not_name_it():
    """Another node may already have retired it: its ids no longer name it."""
    topic = Topic()
    for index, (origin, seq) in enumerate([("old", 1), ("new", 1), ("old", 2)], 1):
        topic.history.append(event(origin, seq, index))
    vector = {"old": 2, "new": 1}
    plan = plan_start(vector, [topic], resume_from="new-1", retired={"old": 2})
    assert plan.notice == "broker.start"
    assert plan.events == []
    # without it, the id would be read as having seen none of it: both events again
    plan = plan_start(vector, [topic], resume_from="new-1")
    assert [e.data for e in plan.events] == ["old1", "old2"]
