import msgpack
import pytest

from broker.cluster import frames
from broker.cluster.membership import Membership
from broker.cluster.replication import Replicator


def ev(origin, seq):
    return {
        "t": "ev",
        "o": origin,
        "s": seq,
        "tp": "t",
        "e": None,
        "d": "x",
        "j": False,
        "ts": 0.0,
        "r": False,
        "f": False,
    }


def test_frames_round_trip_across_arbitrary_splits():
    data = frames.encode({"t": "hb", "v": {"a": 3}}) + frames.encode(ev("a", 1))
    for cut in range(len(data)):
        decoder = frames.FrameDecoder()
        got = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert [f["t"] for f in got] == ["hb", "ev"]


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"t": "nope"}),
        msgpack.packb({"t": "ev"}),
        msgpack.packb({**ev("a", 1), "s": "1"}),
        msgpack.packb({**ev("a", 1), "s": 0}),
        msgpack.packb({"t": "hb", "v": {"a": "x"}}),
        msgpack.packb({"t": "hb", "v": {"a": 1}, "lo": {"a": -1}}),
        msgpack.packb({"t": "hb", "v": {"a": 1}, "ret": "a"}),
        msgpack.packb({**ev("a", 1), "a": 1}),
        msgpack.packb({"t": "pull", "o": "a", "after": -1, "n": 5}),
        msgpack.packb({"t": "pull", "o": "a", "after": 0, "n": 0}),
        msgpack.packb({"t": "page", "o": "a", "after": 0, "n": 1, "to": 0, "lo": 1, "tp": "x"}),
        msgpack.packb({"t": "ack", "o": "a", "s": "1"}),
        msgpack.packb({"t": "members", "peers": {}, "gone": {"b": 1}}),
        msgpack.packb({"t": "hello", "node": 1}),
    ],
)
def test_invalid_frames_raise(body):
    with pytest.raises(frames.FrameError):
        frames.FrameDecoder().feed(frames.PREFIX.pack(len(body)) + body)


def test_oversized_frame_is_refused_before_its_body_arrives():
    with pytest.raises(frames.FrameError, match="over"):
        frames.FrameDecoder(max_frame_bytes=100).feed(frames.PREFIX.pack(101))


class FakeHub:
    def __init__(self):
        self.vector = {}
        self.delivered = []
        self.skipped = []

    def deliver(self, frame):
        assert frame["s"] == self.vector.get(frame["o"], 0) + 1
        self.vector[frame["o"]] = frame["s"]
        self.delivered.append((frame["o"], frame["s"]))

    def skip(self, origin, up_to):
        self.vector[origin] = up_to
        self.skipped.append((origin, up_to))


def test_replicator_delivers_in_order_holds_back_and_drops_duplicates():
    hub = FakeHub()
    replicator = Replicator(hub.vector, hub.deliver, hub.skip)
    for seq in [1, 3, 4, 2, 2, 1, 5]:
        replicator.receive(ev("a", seq))
    assert hub.delivered == [("a", n) for n in range(1, 6)]
    assert replicator.duplicates == 2
    assert replicator.held == 0
    assert replicator.waiting() == 0


def test_replicator_never_gives_up_by_itself_and_skip_to_drains_what_waited():
    hub = FakeHub()
    replicator = Replicator(hub.vector, hub.deliver, hub.skip)
    replicator.receive(ev("a", 1))
    replicator.receive(ev("a", 4))
    replicator.receive(ev("a", 6))
    assert replicator.held_from() == {"a": 4}
    assert hub.skipped == []
    replicator.skip_to("a", 3)
    assert hub.skipped == [("a", 3)]
    assert hub.delivered == [("a", 1), ("a", 4)]
    assert replicator.held_from() == {"a": 6}
    replicator.receive(ev("a", 5))
    assert hub.delivered[-2:] == [("a", 5), ("a", 6)]
    assert replicator.held == 0
    assert replicator.waiting() == 0


def test_replicator_bounds_what_it_holds():
    hub = FakeHub()
    replicator = Replicator(hub.vector, hub.deliver, hub.skip, max_held=2)
    for seq in (3, 4, 5):
        replicator.receive(ev("a", seq))
    assert (replicator.held, replicator.dropped) == (2, 1)


def test_membership_learns_dials_and_backs_off():
    members = Membership("a", "h:1", ["h:2"], down_after=5, backoff_max=8)
    assert members.dial_targets(0) == ["h:2"]
    assert members.dial_targets(0) == []  # already being dialed
    members.dial_failed("h:2", 0)
    assert members.dial_targets(0) == []
    assert members.dial_targets(1) == ["h:2"]  # 0.25-0.6 s later
    members.linked("b", "h:2", 1)
    members.learn({"b": "h:2", "c": "h:3", "a": "h:1"}, 1)
    assert members.dial_targets(1) == ["h:3"]
    assert members.gossip() == {"a": "h:1", "b": "h:2", "c": "h:3"}
    assert members.silent(5) == []
    assert members.silent(6.5) == ["b"]
    members.unlinked("b", 7)
    for _ in range(20):
        members.dial_failed("h:2", 7)
    assert members.members["b"].next_dial - 7 <= 8 * 1.2
