"""The peer handshake state machine (broker/cluster/auth.py), without sockets (issue 17)."""

import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.cluster import auth
from broker.cluster.auth import DIALER, LISTENER, Handshake, HandshakeFailed, Hello

SECRET = b"cluster secret"
A = Hello("a", "origa1", "10.0.0.1:9080")
B = Hello("b", "origb2", "10.0.0.2:9080")


def pair(secret_a=SECRET, secret_b=SECRET):
    return Handshake(secret_a, A, dialer=True), Handshake(secret_b, B, dialer=False)


def run(dialer, listener):
    """Deliver frames both ways until neither side has anything to send."""
    to_listener = dialer.start()
    to_dialer = listener.start()
    while to_listener or to_dialer:
        sending, to_listener = to_listener, []
        for frame in sending:
            to_dialer += listener.receive(frame)
        sending, to_dialer = to_dialer, []
        for frame in sending:
            to_listener += dialer.receive(frame)


def test_two_nodes_with_the_secret_prove_themselves_to_each_other():
    dialer, listener = pair()
    run(dialer, listener)
    assert dialer.peer == B
    assert listener.peer == A


def test_the_listener_proves_nothing_before_the_dialer_has():
    dialer, listener = pair()
    assert listener.receive(dialer.start()[0]) == []  # a hello buys no MAC
    proof = dialer.receive(listener.start()[0])
    assert [f["t"] for f in proof] == ["auth"]
    reply = listener.receive(proof[0])
    assert [f["t"] for f in reply] == ["auth"]
    assert dialer.receive(reply[0]) == []
    assert dialer.peer == B


def test_a_wrong_secret_fails_on_the_listener_before_it_proves_anything():
    dialer, listener = pair(secret_a=b"guess")
    listener.receive(dialer.start()[0])
    proof = dialer.receive(listener.start()[0])
    with pytest.raises(HandshakeFailed, match="failed authentication"):
        listener.receive(proof[0])
    assert listener.peer is None


def test_a_listener_mac_never_verifies_as_a_dialer_mac():
    """The reflection of issue 17: the same transcript, the other role, is refused."""
    listener = Handshake(SECRET, B, dialer=False)
    evil_nonce = auth.new_nonce()
    listener.receive({"t": "hello", "nonce": evil_nonce, "node": "a", "origin": "o", "addr": ""})
    evil = Hello("a", "o", "")
    reflected = auth.mac(SECRET, auth.transcript(LISTENER, evil, evil_nonce, B, listener.nonce))
    with pytest.raises(HandshakeFailed):
        listener.receive({"t": "auth", "mac": reflected})
    # and what it would have needed is a different MAC
    wanted = auth.mac(SECRET, auth.transcript(DIALER, evil, evil_nonce, B, listener.nonce))
    assert not hmac.compare_digest(wanted, reflected)


def test_a_dialer_refuses_its_own_mac_reflected_back():
    dialer = Handshake(SECRET, A, dialer=True)
    listener_nonce = auth.new_nonce()
    out = dialer.receive(
        {"t": "hello", "nonce": listener_nonce, "node": "b", "origin": "o", "addr": ""}
    )
    with pytest.raises(HandshakeFailed):
        dialer.receive(out[0])  # its own dialer MAC, sent back as the listener's


def test_nonce_and_name_cannot_trade_bytes():
    """``N2 + name[:-1]`` with node ``name[-1]`` was the old collision; lengths prevent it."""
    n1, n2 = auth.new_nonce(), auth.new_nonce()
    honest = auth.transcript(DIALER, Hello("node-b", "o", ""), n2, A, n1)
    shifted = auth.transcript(DIALER, Hello("b", "o", ""), n2 + b"node-", A, n1)
    assert honest != shifted


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        ({"nonce": b"x" * 16}, "nonce"),
        ({"nonce": b"x" * 33}, "nonce"),
        ({"nonce": "x" * 32}, "nonce"),
        ({"node": ""}, "node"),
        ({"node": "n" * 256}, "node"),
        ({"node": 7}, "node"),
        ({"origin": "o\n"}, "printable"),
        ({"addr": "a" * 300}, "addr"),
    ],
)
def test_malformed_hellos_are_refused(hello, reason):
    listener = Handshake(SECRET, B, dialer=False)
    frame = {"t": "hello", "node": "a", "origin": "o", "addr": "x:1", "nonce": b"n" * 32, **hello}
    with pytest.raises(HandshakeFailed, match=reason):
        listener.receive(frame)


def test_an_echoed_nonce_is_refused():
    listener = Handshake(SECRET, B, dialer=False)
    with pytest.raises(HandshakeFailed, match="echoed"):
        listener.receive(
            {"t": "hello", "node": "a", "origin": "o", "addr": "", "nonce": listener.nonce}
        )


@pytest.mark.parametrize("kind", ["auth", "ev", "hb", "members", "bye"])
def test_only_hello_comes_first(kind):
    with pytest.raises(HandshakeFailed, match="expected hello"):
        Handshake(SECRET, B, dialer=False).receive({"t": kind, "mac": b"m" * 32})


def test_a_second_hello_and_frames_after_success_are_refused():
    dialer, listener = pair()
    listener.receive(dialer.start()[0])
    with pytest.raises(HandshakeFailed, match="expected auth"):
        listener.receive(dialer.start()[0])
    dialer, listener = pair()
    run(dialer, listener)
    with pytest.raises(HandshakeFailed, match="complete"):
        listener.receive({"t": "auth", "mac": b""})


def test_a_hello_changed_in_transit_breaks_both_proofs():
    dialer, listener = pair()
    hello = {**dialer.start()[0], "addr": "attacker:1"}
    listener.receive(hello)
    proof = dialer.receive(listener.start()[0])
    with pytest.raises(HandshakeFailed):
        listener.receive(proof[0])


names = st.text(min_size=0, max_size=8)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    st.tuples(
        st.sampled_from([DIALER, LISTENER]),
        names,
        names,
        names,
        st.binary(max_size=40),
        names,
        names,
        names,
        st.binary(max_size=40),
    ),
    st.tuples(
        st.sampled_from([DIALER, LISTENER]),
        names,
        names,
        names,
        st.binary(max_size=40),
        names,
        names,
        names,
        st.binary(max_size=40),
    ),
)
def test_different_transcripts_never_share_a_mac_input(one, two):
    def encode(t):
        role, dn, do, da, dnonce, ln, lo, la, lnonce = t
        return auth.transcript(role, Hello(dn, do, da), dnonce, Hello(ln, lo, la), lnonce)

    assert (encode(one) == encode(two)) == (one == two)
