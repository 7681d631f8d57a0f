"""Membership decisions (sans-IO): removal, tombstones, pauses, retiring origins (issue 20)."""

from broker.cluster.membership import Membership


def make(**kw):
    options = {"down_after": 1.0, "remove_after": 10.0, "tombstone_seconds": 100.0}
    options.update(kw)
    return Membership("a", "h:1", [], origin="oa", **options)


def test_a_member_unseen_for_remove_after_is_removed_and_tombstoned():
    members = make()
    members.linked("b", "h:2", 0, "ob")
    members.unlinked("b", 1)
    assert members.expire(10.5) == []
    assert members.expire(11.5) == ["b"]
    assert "b" not in members.members
    assert members.gossip_gone() == {"b": "ob"}
    assert members.dial_targets(12) == []  # not dialled forever


def test_an_old_rumour_does_not_bring_a_removed_member_back():
    members = make()
    members.linked("b", "h:2", 0, "ob")
    members.unlinked("b", 1)
    members.expire(20)
    members.learn({"b": "h:2", "c": "h:3"}, 21, origins={"b": "ob", "c": "oc"})
    assert set(members.members) == {"c"}
    members.learn({"b": "h:2"}, 22)  # a rumour without origins: still old
    assert set(members.members) == {"c"}
    # a new incarnation (it restarted with a new origin) is learnt again
    members.learn({"b": "h:9"}, 23, origins={"b": "ob2"})
    assert members.members["b"].addr == "h:9"
    assert "b" not in members.tombstones


def test_the_member_itself_linking_again_lifts_the_tombstone():
    members = make()
    members.learn({"b": "h:2"}, 0, origins={"b": "ob"})
    members.expire(11)
    assert "b" in members.tombstones
    members.linked("b", "h:2", 12, "ob")
    assert "b" not in members.tombstones
    assert members.members["b"].up


def test_tombstones_are_gossiped_but_never_remove_a_linked_member():
    members = make()
    members.linked("b", "h:2", 0, "ob")
    members.learn({}, 1, gone={"b": "ob"})
    assert "b" in members.members
    members.learn({"c": "h:3"}, 1, origins={"c": "oc"})
    members.learn({}, 2, gone={"c": "oc"})
    assert "c" not in members.members
    members.learn({}, 2, gone={"b": "other-incarnation"})
    assert "b" in members.members


def test_tombstones_expire():
    members = make(tombstone_seconds=5)
    members.learn({"b": "h:2"}, 0, origins={"b": "ob"})
    members.expire(11)
    members.expire(17)
    assert members.tombstones == {}


def test_waking_from_a_pause_keeps_every_link():
    """A SIGSTOPped node sees every peer silent when it wakes: that is its own pause."""
    members = make(down_after=2)
    members.linked("b", "h:2", 0, "ob")
    assert members.silent(0.5) == []
    assert members.silent(30) == []  # 29.5 s without a check: this node was paused
    assert members.pauses == 1
    for now in (30.5, 31, 31.5, 32):  # checked often; b sent nothing since 30
        assert members.silent(now) == []
    assert members.silent(32.5) == ["b"]


def test_origins_no_member_uses_retire_once_their_newest_event_is_old():
    members = make(retire_after=5)
    members.linked("b", "h:2", 0, "ob1")
    last = {"ob1": 100.0, "old": 100.0}
    assert members.retirable(last, wall_now=102) == []
    assert members.retiring() == set()
    assert members.retirable(last, wall_now=103) == []
    assert members.retiring() == {"old"}  # half-way: ids without it have seen all of it
    assert members.retirable(last, wall_now=105) == ["old"]
    # b restarts with a new origin: the old one retires 5 s after its last event
    members.unlinked("b", 6)
    members.linked("b", "h:2", 7, "ob2")
    assert members.retirable({"ob1": 100.0, "ob2": 106.0}, wall_now=104) == []
    assert members.retirable({"ob1": 100.0, "ob2": 106.0}, wall_now=105) == ["ob1"]
    # an origin none of whose events is held here is not worth keeping
    assert members.retirable({"gone": None}, wall_now=0) == ["gone"]


def test_the_decision_does_not_start_again_when_the_node_restarts():
    """Rolling restarts shorter than retire_after must still retire old origins."""
    for restart in range(10):
        members = make(retire_after=600)  # a fresh node, every 60 s
        members.linked("b", "h:2", 0, "ob")
        wall_now = 60.0 * restart
        ready = members.retirable({"old": 0.0}, wall_now=wall_now)
        assert ready == (["old"] if wall_now >= 600 else [])


def test_an_origin_another_node_retired_may_go_at_once_unless_a_member_uses_it():
    members = make()
    members.linked("b", "h:2", 0, "ob")
    assert members.may_retire("old")
    assert not members.may_retire("ob")
    assert not members.may_retire("oa")  # its own


def test_nothing_retires_while_a_members_origin_is_unknown():
    members = make(retire_after=1)
    members.learn({"c": "h:3"}, 0)  # an older node: no origins in its gossip
    assert members.retirable({"x": 0.0}, wall_now=100) == []
    assert not members.may_retire("x")
