"""Sans-IO parts of the admin view: who may, and a topic's publish rate."""

import pytest

from broker.control.admin import _is_loopback, admit
from broker.edge.auth import Authenticator, Forbidden, Unauthorized
from broker.edge.policy import Policy
from broker.hub.state import _Topic


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
        ("?", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback(host, loopback):
    assert _is_loopback(host) is loopback


def test_without_auth_strangers_and_proxied_clients_are_refused():
    open_policy = Policy()
    admit(open_policy, {}, {}, "127.0.0.1")
    with pytest.raises(Forbidden):
        admit(open_policy, {}, {}, "192.0.2.7")
    with pytest.raises(Forbidden):
        admit(open_policy, {"forwarded": "for=192.0.2.7"}, {}, "127.0.0.1")


def test_with_auth_loopback_is_no_pass():
    policy = Policy(auth=Authenticator(key="a-shared-secret-that-is-long-enough-32"))
    with pytest.raises(Unauthorized):
        admit(policy, {}, {}, "127.0.0.1")


def test_rate_is_over_the_last_minute():
    topic = _Topic("t", 10)
    assert topic.rate(1000.0) == 0.0
    for n in range(60):  # one a second during the minute [960, 1020)
        topic.note_publish(960.0 + n)
    assert topic.published == 60
    assert topic.last_published == 1019.0
    assert topic.rate(1019.5) == pytest.approx(1.0)
    # Half a minute later, half of that minute is still in the window.
    assert topic.rate(1050.0) == pytest.approx(0.5)
    topic.note_publish(1050.0)
    assert topic.rate(1050.0) == pytest.approx(0.5 + 1 / 60)
    assert topic.rate(1200.0) == 0.0
    topic.note_publish(1300.0)  # a gap of minutes: the old minute is forgotten
    assert topic.prev_bucket == 0
    assert topic.rate(1300.0) == pytest.approx(1 / 60)
