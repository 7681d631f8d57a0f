from broker.hub.events import Event
from broker.hub.history import TopicHistory, merge


def event(origin, seq, index=None):
    return Event(
        topic="t",
        event_type=None,
        data="",
        is_json=False,
        origin=origin,
        seq=seq,
        index=index or seq,
        event_id=f"{origin}-{seq}",
        published_at=0.0,
    )


def test_after_returns_unseen_events_and_exactness():
    history = TopicHistory(3)
    for seq in range(1, 6):
        history.append(event("a", seq))
    assert [e.seq for e in history.events] == [3, 4, 5]
    assert history.evicted == {"a": 2}
    events, exact = history.after({"a": 3})
    assert ([e.seq for e in events], exact) == ([4, 5], True)
    events, exact = history.after({"a": 2})
    assert ([e.seq for e in events], exact) == ([3, 4, 5], True)
    events, exact = history.after({"a": 1})
    assert ([e.seq for e in events], exact) == ([3, 4, 5], False)
    events, exact = history.after({})
    assert exact is False


def test_size_zero_keeps_nothing_and_marks_eviction():
    history = TopicHistory(0)
    history.append(event("a", 1))
    assert history.after({"a": 0}) == ([], False)
    assert history.after({"a": 1}) == ([], True)


def test_merge_restores_delivery_order():
    first = [event("a", 1, 1), event("a", 4, 4)]
    second = [event("b", 1, 2), event("b", 2, 3)]
    assert [e.index for e in merge([first, second])] == [1, 2, 3, 4]
