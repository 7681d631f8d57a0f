"""Sans-IO parts of the client: backoff, the reconnect/fallback plan, resume position, decoding."""

from __future__ import annotations

import random

import pytest
from broker_client import (
    ClientError,
    Dropped,
    Ended,
    Event,
    FailedOver,
    ProtocolError,
    Reconnecting,
    Reset,
    ServerError,
    ServerSentEvent,
    TransportChanged,
)
from broker_client._errors import BrokerTimeout, BrokerUnavailable
from broker_client._events import Started, Stopping, decode_message, decode_sse
from broker_client._plan import (
    Attempt,
    ConnectionPlan,
    Decision,
    EndKind,
    StreamEnd,
    backoff_delay,
)
from broker_client._position import ResumePosition

A, B = "http://a:1", "http://b:1"
REFUSED = StreamEnd(EndKind.REFUSED, BrokerUnavailable("refused"))
REJECTED_502 = StreamEnd(EndKind.REJECTED, ServerError(502, "bad gateway"))
REJECTED_400 = StreamEnd(EndKind.REJECTED, ClientError(400, "bad_topic", "bad topic"))
NO_START = StreamEnd(EndKind.NO_START, BrokerTimeout("no broker.start"))
STALLED = StreamEnd(EndKind.STALLED, BrokerTimeout("silent"))
BROKEN = StreamEnd(EndKind.BROKEN, BrokerUnavailable("reset"))


@pytest.mark.parametrize(
    ("failures", "base"),
    [(1, 1.0), (2, 2.0), (3, 5.0), (4, 15.0), (5, 15.0), (50, 15.0)],
)
def test_backoff_schedule_and_cap(failures: int, base: float) -> None:
    rng = random.Random(7)
    for _ in range(200):
        assert base * 0.9 <= backoff_delay(failures, rng=rng) <= base * 1.1


def test_backoff_doubles_past_the_schedule_up_to_a_raised_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, max_backoff=60.0, rng=rng) for n in range(1, 8)]
    for delay, base in zip(delays, [1, 2, 5, 15, 30, 60, 60], strict=True):
        assert base * 0.9 <= delay <= base * 1.1


def test_backoff_is_jittered() -> None:
    rng = random.Random(3)
    assert len({backoff_delay(1, rng=rng) for _ in range(20)}) > 1


def run(plan: ConnectionPlan, end: StreamEnd, *, started: bool = False) -> tuple[Attempt, Decision]:
    attempt = plan.next_attempt()
    if started:
        plan.on_started(attempt)
    return attempt, plan.on_end(attempt, end, started=started)


def test_failures_go_round_robin_with_growing_backoff() -> None:
    plan = ConnectionPlan([A, B], "sse", rng=random.Random(0))
    seen = []
    for _ in range(4):
        attempt, decision = run(plan, REFUSED)
        seen.append((attempt.url, attempt.transport))
        assert isinstance(decision.notices[0], Reconnecting)
    assert seen == [(A, "sse"), (B, "sse"), (A, "sse"), (B, "sse")]
    assert plan.failures == 4


def test_a_started_stream_resets_the_failure_count_and_reports_failover() -> None:
    plan = ConnectionPlan([A, B], "sse", rng=random.Random(0))
    first = plan.next_attempt()
    assert plan.on_started(first) == []
    plan.on_end(first, BROKEN, started=True)
    run(plan, REFUSED)  # b refused
    attempt = plan.next_attempt()
    assert attempt.url == A
    assert plan.on_started(attempt) == []  # same node as before: no failover notice
    assert plan.failures == 0
    plan.on_end(attempt, BROKEN, started=True)
    attempt = plan.next_attempt()
    assert plan.on_started(attempt) == [FailedOver(B)]


@pytest.mark.parametrize("end", [REJECTED_502, REJECTED_400, NO_START])
def test_auto_switches_to_websocket_at_once_on_the_same_node(end: StreamEnd) -> None:
    plan = ConnectionPlan([A, B], "auto")
    attempt, decision = run(plan, end)
    assert attempt == Attempt(A, "sse")
    assert decision.delay == 0
    assert decision.fatal is None
    assert [type(n) for n in decision.notices] == [TransportChanged]
    assert plan.next_attempt() == Attempt(A, "ws")
    # The switch is for good: failures on WebSocket stay on WebSocket.
    run(plan, REFUSED)
    assert plan.next_attempt() == Attempt(B, "ws")


@pytest.mark.parametrize("end", [REFUSED, BROKEN])
def test_node_failures_never_switch_transport(end: StreamEnd) -> None:
    plan = ConnectionPlan([A, B], "auto")
    for _ in range(5):
        _, decision = run(plan, end, started=end is BROKEN)
        assert not any(isinstance(n, TransportChanged) for n in decision.notices)
    assert plan.transport == "sse"


def test_two_stalls_in_a_row_switch_but_one_does_not() -> None:
    plan = ConnectionPlan([A], "auto")
    _, decision = run(plan, STALLED, started=True)
    assert [type(n) for n in decision.notices] == [Reconnecting]
    run(plan, BROKEN, started=True)  # a stream that worked resets the count
    _, decision = run(plan, STALLED, started=True)
    assert plan.next_attempt().transport == "sse"
    _, decision = run(plan, STALLED, started=True)
    assert [type(n) for n in decision.notices] == [TransportChanged]
    assert plan.next_attempt().transport == "ws"


def test_4xx_is_final_on_the_last_transport() -> None:
    for transport in ("sse", "ws"):
        _, decision = run(ConnectionPlan([A, B], transport), REJECTED_400)
        assert decision.fatal is REJECTED_400.error
    plan = ConnectionPlan([A, B], "auto")
    run(plan, REJECTED_400)  # SSE: switch
    _, decision = run(plan, REJECTED_400)  # WebSocket too: final
    assert decision.fatal is REJECTED_400.error


@pytest.mark.parametrize("end", [REJECTED_502, NO_START, STALLED])
def test_explicit_sse_retries_what_auto_would_switch_on(end: StreamEnd) -> None:
    plan = ConnectionPlan([A, B], "sse")
    for _ in range(3):
        _, decision = run(plan, end, started=end is STALLED)
        assert decision.fatal is None
        assert [type(n) for n in decision.notices] == [Reconnecting]
    assert plan.transport == "sse"


def test_shutdown_waits_retry_ms_and_moves_on() -> None:
    plan = ConnectionPlan([A, B], "sse", rng=random.Random(0))
    _, decision = run(plan, StreamEnd(EndKind.SHUTDOWN, retry_ms=2000), started=True)
    assert 1.8 <= decision.delay <= 2.2
    assert decision.notices == [Reconnecting(1, decision.delay, None)]
    assert plan.next_attempt().url == B


def test_resume_position_and_duplicates() -> None:
    position = ResumePosition("x-1", window=3)
    assert position.last_event_id == "x-1"
    position.moved("")  # an empty position never erases the resume point
    assert position.last_event_id == "x-1"
    for ident in ("a", "b", "c"):
        assert not position.is_duplicate(ident)
        position.delivered(ident)
    assert position.is_duplicate("a")
    position.delivered("d")  # the window forgets the oldest
    assert not position.is_duplicate("a")
    assert position.is_duplicate("d")
    assert position.last_event_id == "d"
    position.moved("r-0")
    assert position.last_event_id == "r-0"


ENVELOPE = '{"id":"o-2","topic":"jobs","event":"progress","data":{"p":0.4}}'


@pytest.mark.parametrize(
    ("sse", "expected"),
    [
        (ServerSentEvent("message", ENVELOPE, "o-2"), Event("o-2", "jobs", "progress", {"p": 0.4})),
        (
            ServerSentEvent("message", '{"id":"o-3","topic":"a","event":null,"data":"t"}', "o-3"),
            Event("o-3", "a", None, "t"),
        ),
        (
            ServerSentEvent("broker.start", '{"position":"o-1","resumed":false}', "o-1"),
            Started("o-1", False),
        ),
        (
            ServerSentEvent(
                "broker.start",
                '{"id":"o-1","topic":null,"event":"broker.start","data":{"position":"o-1"}}',
                "o-1",
            ),
            Started("o-1", False),
        ),
        (
            ServerSentEvent(
                "broker.reset", '{"position":"n-0","requested":"o-1","reason":"unknown"}', "n-0"
            ),
            Reset("n-0", "o-1", "unknown"),
        ),
        (
            ServerSentEvent("broker.dropped", '{"dropped":3,"resume_from":"o-4"}', "o-4"),
            Dropped(3, "o-4"),
        ),
        (ServerSentEvent("broker.shutdown", '{"retry_ms":1500}', "o-4"), Stopping(1500)),
        (
            ServerSentEvent(
                "broker.start", '{"position":"o-1","resumed":true,"heartbeat_seconds":5}', "o-1"
            ),
            Started("o-1", True, 5.0),
        ),
        (ServerSentEvent("broker.end", '{"topic":"jobs"}', "o-9"), Ended("jobs")),
        (
            ServerSentEvent(
                "broker.heartbeat",
                '{"id":null,"topic":null,"event":"broker.heartbeat","data":{}}',
                "o-9",
            ),
            None,
        ),
        (ServerSentEvent("broker.future", "{}", "o-4"), None),
    ],
)
def test_decode_sse(sse: ServerSentEvent, expected: object) -> None:
    assert decode_sse(sse) == expected


@pytest.mark.parametrize(
    "sse",
    [
        ServerSentEvent("message", "not json", "o-1"),
        ServerSentEvent("message", '{"p": 1}', "o-1"),  # no envelope
        ServerSentEvent("broker.dropped", '{"resume_from":"o-4"}', "o-4"),
    ],
)
def test_decode_sse_refuses_what_is_not_the_protocol(sse: ServerSentEvent) -> None:
    with pytest.raises(ProtocolError):
        decode_sse(sse)


def test_decode_websocket_message() -> None:
    assert decode_message({"id": "o-5", "topic": "t", "event": None, "data": [1]}) == Event(
        "o-5", "t", None, [1]
    )
    assert decode_message(
        {"id": "o-5", "topic": None, "event": "broker.ack", "data": {"ref": 1}}
    ) is None
    with pytest.raises(ProtocolError):
        decode_message(["not", "an", "object"])
