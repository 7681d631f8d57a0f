import pytest

from broker.core.errors import BadEventType, BadTopic
from broker.core.topics import check_event_type, check_topic


@pytest.mark.parametrize("topic", ["a", "jobs/42", "alerts.critical", "a:b~c-d_e", "x" * 200])
def test_valid_topics(topic):
    assert check_topic(topic) == topic


@pytest.mark.parametrize(
    "topic", ["", "a b", "a//b", "/a", "a/", "a/./b", "a/../b", "a/events", "ws", "é", "x" * 201]
)
def test_invalid_topics(topic):
    with pytest.raises(BadTopic):
        check_topic(topic)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (None, None),
        ("", None),
        ("message", None),
        ("progress", "progress"),
        ("a.b:c-d_1", "a.b:c-d_1"),
    ],
)
def test_event_types(given, stored):
    assert check_event_type(given) == stored


@pytest.mark.parametrize("bad", ["error", "open", "broker.start", "a b", "x" * 65, "é"])
def test_reserved_or_invalid_event_types(bad):
    with pytest.raises(BadEventType):
        check_event_type(bad)
