"""Fuzzing a real node's peer port before and after authentication (issue 17).

The node is a real ``python -m broker run`` process; hypothesis generates what a hostile
peer sends: random bytes, length-prefixed junk, msgpack of any shape, peer frames with
fields of the wrong type or size, and valid frames with bytes flipped. Properties:

* the node process stays up and never logs a traceback;
* a bystander subscriber keeps receiving the events published afterwards;
* nothing a peer that has not proven the secret sends is delivered (every pre-auth example
  ends with a well-formed ``ev`` frame for the bystander's topic);
* every fuzzing connection is gone afterwards (no link left over).

Bounded for the normal run (derandomized, ``FUZZ_EXAMPLES`` per phase, a few seconds); run
longer with ``BROKER_FUZZ_EXAMPLES=5000 pytest tests/cluster/test_peer_link_fuzz.py`` or
``make fuzz-peer``.
"""

from __future__ import annotations

import os
import socket
import time

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.cluster import auth, frames
from tests.support.servers import BrokerProcess

FUZZ_EXAMPLES = int(os.environ.get("BROKER_FUZZ_EXAMPLES", "200"))
SECRET = "fuzz-secret"
MARK = "BOGUS-FROM-A-STRANGER"

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- what a hostile peer sends ----------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
# Addresses that exercise parsing without making the node resolve random host names.
addresses = st.sampled_from(["", "x", ":", "127.0.0.1:0", "127.0.0.1:99999", "[::1]:1", "a:b:c"])
uint = st.integers(min_value=0, max_value=2**64 - 1)
well_typed = {
    "node": st.text(max_size=300),
    "origin": st.text(max_size=10),
    "addr": addresses,
    "nonce": st.binary(min_size=31, max_size=33),
    "mac": st.binary(min_size=31, max_size=33),
    "o": st.sampled_from(["zzzzzz", "yyyyyy", ""]) | st.text(max_size=8),
    "s": st.integers(min_value=1, max_value=2**64 - 1),
    "tp": st.sampled_from(["other", "", "a/b", "x" * 300]) | st.text(max_size=20),
    "e": st.none() | st.text(max_size=8),
    "d": st.text(max_size=40),
    "j": st.booleans(),
    "ts": st.floats() | st.integers(min_value=-(2**63), max_value=2**64 - 1),
    "r": st.booleans(),
    "f": st.booleans(),
    "v": st.dictionaries(st.text(max_size=8), uint, max_size=4),
    "peers": st.dictionaries(st.text(max_size=8), addresses, max_size=3),
    "to": uint,
}
frame_keys = {
    "hello": ["node", "origin", "nonce", "addr"],
    "auth": ["mac"],
    "members": ["peers"],
    "hb": ["v"],
    "ev": ["o", "s", "tp", "e", "d", "j", "ts", "r", "f"],
    "gap": ["o", "to"],
    "bye": [],
}


ROLL = st.sampled_from([*["typed"] * 40, "missing", "any"])


@st.composite
def peer_frames(draw: st.DrawFn, bystander: bool = False) -> bytes:
    """A peer frame: mostly well-typed fields, now and then one of any type or missing.

    ``bystander``: events may target the bystander's topic (only for peers that have not
    proven the secret: an authenticated peer may legitimately end that topic).
    """
    kind = draw(st.sampled_from(["ev", "hb", "gap", "members", *frame_keys]))
    frame: dict[str, object] = {"t": kind}
    for key in frame_keys.get(kind, []):
        roll = draw(ROLL)
        if roll == "missing":
            continue
        if key == "tp" and bystander and roll == "typed" and draw(st.booleans()):
            frame[key] = "bystander"
            continue
        frame[key] = draw(values if roll == "any" else well_typed[key])
    extra = draw(st.dictionaries(st.text(max_size=4), values, max_size=1))
    body = msgpack.packb({**extra, **frame}, use_bin_type=True)
    return frames.PREFIX.pack(len(body)) + body


@st.composite
def flipped(draw: st.DrawFn, inner: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(inner))
    for _ in range(draw(st.integers(1, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def _prefixed(body: bytes) -> bytes:
    return frames.PREFIX.pack(len(body)) + body


junk = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(_prefixed),
    values.map(lambda v: _prefixed(msgpack.packb(v, use_bin_type=True))),
    flipped(peer_frames()),
    st.integers(0, 2**32 - 1).map(frames.PREFIX.pack),
    st.text(max_size=6).map(lambda t: _prefixed(msgpack.packb({"t": t}))),
)


def payloads(*, bystander: bool) -> st.SearchStrategy[bytes]:
    """A run of peer frames (most of them valid), then perhaps junk."""
    return st.builds(
        lambda good, tail: b"".join(good) + tail,
        st.lists(peer_frames(bystander), min_size=1, max_size=8),
        st.just(b"") | junk,
    )


# -- a blocking peer (the sans-IO handshake makes this a dozen lines) ------------------


def read_frame(sock: socket.socket, decoder: frames.FrameDecoder) -> dict:
    while (frame := decoder.next_frame()) is None:
        data = sock.recv(65536)
        if not data:
            raise EOFError
        decoder.add(data)
    return frame


def authenticate(sock: socket.socket, node: str) -> None:
    machine = auth.Handshake(SECRET.encode(), auth.Hello(node, "fuzzer", ""), dialer=True)
    decoder = frames.FrameDecoder()
    sock.sendall(b"".join(frames.encode(f) for f in machine.start()))
    while machine.peer is None:
        sock.sendall(b"".join(frames.encode(f) for f in machine.receive(read_frame(sock, decoder))))


def send_and_drain(sock: socket.socket, payload: bytes) -> None:
    """Send, half-close, read until the node closes (bounded by the socket timeout)."""
    try:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    except OSError:
        pass  # reset by the node: it closed the link, as it should


# -- the node and its bystander --------------------------------------------------------


class Target:
    def __init__(self, process: BrokerProcess) -> None:
        self.process = process
        self.client = httpx.Client(base_url=process.url, timeout=5)
        host, _, port = self.client.get("/stats").json()["cluster"]["peer_addr"].rpartition(":")
        self.peer = (host, int(port))
        host, port = process.url.removeprefix("http://").rsplit(":", 1)
        self.bystander = socket.create_connection((host, int(port)), timeout=5)
        self.bystander.sendall(
            b"GET /topics/bystander/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.received = b""
        self.published = 0
        self.wait_for(b"200 OK")

    def wait_for(self, needle: bytes, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.received:
            assert time.monotonic() < deadline, f"bystander never got {needle!r}"
            chunk = self.bystander.recv(65536)
            assert chunk, "the bystander's stream ended"
            self.received += chunk

    def connect(self) -> socket.socket:
        try:
            return socket.create_connection(self.peer, timeout=3)
        except OSError:
            assert self.process.proc is not None
            assert self.process.proc.poll() is None, "the node died:\n" + "".join(
                self.process.log[-20:]
            )
            raise

    def check(self) -> None:
        """The properties: alive, bystander served, nothing bogus delivered, no links left."""
        assert self.process.proc is not None
        assert self.process.proc.poll() is None, "the node process died"
        self.published += 1
        marker = f"still-here-{self.published}"
        assert self.client.post("/topics/bystander", json=marker).status_code == 202
        self.wait_for(marker.encode())
        assert MARK.encode() not in self.received
        deadline = time.monotonic() + 5
        while any(p["state"] == "up" for p in self.client.get("/stats").json()["cluster"]["peers"]):
            assert time.monotonic() < deadline, "a fuzzing link outlived its connection"
            time.sleep(0.01)
        assert not any("Traceback" in line for line in self.process.log), "".join(self.process.log)

    def close(self) -> None:
        self.bystander.close()
        self.client.close()


@pytest.fixture
def target(monkeypatch):
    # BROKER_* variables are broker settings: keep the test's own knob away from the node.
    monkeypatch.delenv("BROKER_FUZZ_EXAMPLES", raising=False)
    process = BrokerProcess(
        env={
            "BROKER_CLUSTER_ENABLED": "true",
            "BROKER_CLUSTER_NODE_ID": "fuzzed",
            "BROKER_CLUSTER_PORT": "0",
            "BROKER_CLUSTER_SECRET": SECRET,
            "BROKER_CLUSTER_HANDSHAKE_TIMEOUT_SECONDS": "2",
            "BROKER_CLUSTER_HEARTBEAT_SECONDS": "0.2",
        }
    )
    process.start()
    target = Target(process)
    try:
        yield target
    finally:
        target.close()
        process.stop()


STRANGER_EVENT = frames.encode_event(
    origin="zzzzzz",
    seq=1,
    topic="bystander",
    event_type=None,
    data=MARK,
    is_json=False,
    published_at=0.0,
    retain=False,
    final=False,
)


def test_frames_from_a_stranger_never_hurt_or_reach_anyone(target):
    """Before authentication: after a hello or not, then junk, then an event."""

    @FUZZ
    @given(
        payload=payloads(bystander=True),
        with_hello=st.booleans(),
        nonce=st.binary(min_size=32, max_size=32),
    )
    def stranger(payload: bytes, with_hello: bool, nonce: bytes) -> None:
        hello = frames.encode(
            {"t": "hello", "node": "stranger", "origin": "zzzzzz", "nonce": nonce, "addr": ""}
        )
        with target.connect() as sock:
            send_and_drain(sock, (hello if with_hello else b"") + payload + STRANGER_EVENT)

    stranger()
    target.check()


def test_junk_from_an_authenticated_peer_ends_only_its_link(target):
    """After authentication: whatever a peer with the secret sends ends at most its link."""

    names = iter(range(1_000_000))

    @FUZZ
    @given(payload=payloads(bystander=False))
    def peer(payload: bytes) -> None:
        with target.connect() as sock:
            authenticate(sock, f"fuzzer-{next(names)}")
            send_and_drain(sock, payload)

    peer()
    target.check()
