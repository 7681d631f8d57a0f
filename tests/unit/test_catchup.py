"""The pull-based catch-up decisions (sans-IO): whom to ask, how much, when a range is lost."""

from broker.cluster.catchup import CatchUp, Gap, Pull


def make(**kw):
    return CatchUp(page_events=100, window=2, stall_seconds=2, gap_grace_seconds=2, **kw)


def test_asks_one_holder_for_pages_and_keeps_the_window_full():
    catchup = make()
    catchup.digest("b", {"a": 1000}, {}, now=0)
    catchup.digest("c", {"a": 900}, {}, now=0)
    # only the peer with the most is asked; two pages in flight
    assert catchup.plan({}, {}, now=0) == [Pull("b", "a", 0, 100), Pull("b", "a", 100, 100)]
    assert catchup.plan({}, {}, now=0.1) == []  # window full: nothing more until an answer
    catchup.answered("b", "a", 0, 100, 100, 1, now=0.2)
    assert catchup.plan({"a": 100}, {}, now=0.2) == [Pull("b", "a", 200, 100)]
    assert catchup.active() == {"a": "b"}


def test_the_last_page_is_only_as_long_as_the_holder_has():
    catchup = make()
    catchup.digest("b", {"a": 150}, {}, now=0)
    assert catchup.plan({"a": 20}, {}, now=0) == [Pull("b", "a", 20, 100), Pull("b", "a", 120, 30)]


def test_nothing_to_do_when_level_with_every_peer():
    catchup = make()
    catchup.digest("b", {"a": 5, "b": 9}, {}, now=0)
    assert catchup.plan({"a": 5, "b": 9}, {}, now=10) == []
    assert catchup.active() == {}


def test_a_slow_pull_is_not_a_stall_while_it_progresses():
    """Issue 20: the timeout counts from the last progress, not from when waiting began."""
    catchup = make()
    catchup.digest("b", {"a": 100_000}, {}, now=0)
    catchup.plan({}, {}, now=0)
    have = 0
    for step in range(1, 50):  # an answer every 1.5 s, 1.5 s < stall 2 s: never stalled
        have += 100
        catchup.answered("b", "a", have - 100, 100, have, 1, now=step * 1.5)
        actions = catchup.plan({"a": have}, {}, now=step * 1.5)
        assert all(isinstance(a, Pull) and a.peer == "b" for a in actions)
    assert catchup.stalls == 0
    assert catchup.gaps == 0


def test_a_stalled_pull_moves_to_another_holder():
    catchup = make()
    catchup.digest("b", {"a": 500}, {}, now=0)
    catchup.digest("c", {"a": 400}, {}, now=0)
    assert {a.peer for a in catchup.plan({}, {}, now=0)} == {"b"}
    assert catchup.plan({}, {}, now=1.9) == []
    moved = catchup.plan({}, {}, now=2.5)
    assert moved
    assert {a.peer for a in moved} == {"c"}
    assert catchup.stalls == 1


def test_a_holder_that_left_is_replaced_at_once():
    catchup = make()
    catchup.digest("b", {"a": 500}, {}, now=0)
    catchup.digest("c", {"a": 500}, {}, now=0)
    first = catchup.plan({}, {}, now=0)[0].peer
    catchup.peer_gone(first)
    assert {a.peer for a in catchup.plan({}, {}, now=0.1)} == {"bc".replace(first, "")}


def test_a_range_that_a_peer_still_holds_is_never_given_up():
    """Issue 20: 'gave up on 9400 events' that both peers still held."""
    catchup = make()
    catchup.digest("b", {"a": 15_000}, {}, now=0)
    for second in range(0, 60):  # the holder never answers: stalls, but never a gap
        actions = catchup.plan({}, {"a": 14_000}, now=second)
        assert not any(isinstance(a, Gap) for a in actions)
    assert catchup.stalls >= 1


def test_a_range_no_reachable_peer_holds_is_a_gap_after_the_grace():
    catchup = make()
    catchup.digest("b", {"a": 1000}, {"a": 401}, now=0)  # b evicted 1..400
    actions = catchup.plan({"a": 100}, {}, now=0)
    assert actions == [Pull("b", "a", 100, 1)]  # ask it which topics the range was on
    catchup.answered("b", "a", 100, 1, 100, 401, now=0.1, topics=["t1"])
    assert catchup.plan({"a": 100}, {}, now=1) == []
    assert catchup.plan({"a": 100}, {}, now=2.5) == [Gap("a", 400, ("t1",))]
    # after the gap, the rest is pulled from the holder
    assert catchup.plan({"a": 400}, {}, now=2.6) == [
        Pull("b", "a", 400, 100),
        Pull("b", "a", 500, 100),
    ]


def test_frames_behind_a_hole_nobody_holds_end_the_wait_with_unknown_topics():
    catchup = make()
    catchup.digest("b", {"a": 10}, {}, now=0)
    assert catchup.plan({"a": 10}, {"a": 13}, now=0) == []
    assert catchup.plan({"a": 10}, {"a": 13}, now=1) == []
    assert catchup.plan({"a": 10}, {"a": 13}, now=2.5) == [Gap("a", 12, None)]


def test_a_crashed_origins_claimed_tail_is_reported_once_nobody_has_it():
    """With ack = local, survivors report what the dead origin said it had."""
    catchup = make()
    catchup.digest("a", {"a": 100}, {}, now=0)
    catchup.digest("b", {"a": 96}, {}, now=0)
    catchup.peer_gone("a")
    assert catchup.plan({"a": 96}, {}, now=0.5) == []
    assert catchup.plan({"a": 96}, {}, now=3) == [Gap("a", 100, None)]
    assert catchup.plan({"a": 100}, {}, now=3.1) == []


def test_progress_from_elsewhere_postpones_a_gap():
    catchup = make()
    catchup.digest("a", {"a": 100}, {}, now=0)
    catchup.peer_gone("a")
    for step, have in enumerate(range(90, 100)):
        assert catchup.plan({"a": have}, {}, now=step * 1.5) == []


def test_retired_origins_are_forgotten():
    catchup = make()
    catchup.digest("b", {"old": 50}, {}, now=0)
    catchup.forget(["old"])
    assert catchup.plan({}, {}, now=10) == []


def test_without_a_hole_it_waits_for_frames_on_their_way_before_pulling():
    catchup = CatchUp(page_events=100, patience_seconds=1)
    catchup.digest("b", {"a": 10}, {}, now=0)
    assert catchup.plan({"a": 8}, {}, now=0) == []
    assert catchup.plan({"a": 9}, {}, now=0.9) == []  # progress: the live frames arrive
    assert catchup.plan({"a": 9}, {}, now=2) == [Pull("b", "a", 9, 1)]
    # a hole (a frame held back) is pulled at once
    catchup = CatchUp(page_events=100, patience_seconds=1)
    catchup.digest("b", {"a": 10}, {}, now=0)
    assert catchup.plan({"a": 5}, {"a": 9}, now=0) == [Pull("b", "a", 5, 5)]


def test_no_gap_while_a_member_that_may_hold_the_range_is_unreachable():
    """A partition is not a loss: wait until every member is linked (or removed)."""
    catchup = make()
    catchup.digest("b", {"a": 10}, {}, now=0)
    for now in (0, 5, 50):
        assert catchup.plan({"a": 10}, {"a": 13}, now=now, everyone_reachable=False) == []
    assert catchup.plan({"a": 10}, {"a": 13}, now=51) == [Gap("a", 12, None)]
