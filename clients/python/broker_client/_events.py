"""What a subscription yields, and how wire messages become it (sans-IO).

A subscription's iterator yields :class:`Event` for data and :class:`Notice` subclasses for
everything the caller may want to know about the stream itself. Both transports carry the same
JSON object per event, ``{"id", "topic", "event", "data"}`` (SSE is requested with
``envelope=1``), so :func:`decode_message` turns either into one of:

- :class:`Event` (a published event),
- a :class:`Notice` for the caller (:class:`Dropped`, :class:`Reset`, :class:`Ended`),
- a :class:`Control` the subscription consumes itself (``broker.start``, ``broker.shutdown``),
- ``None`` for things to ignore (``broker.heartbeat``, command acks, unknown ``broker.*``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._errors import BrokerError, ProtocolError
from ._sse import ServerSentEvent

__all__ = [
    "Control",
    "Dropped",
    "Ended",
    "Event",
    "FailedOver",
    "Notice",
    "Reconnecting",
    "Reset",
    "Started",
    "Stopping",
    "TransportChanged",
    "decode_message",
    "decode_sse",
]


@dataclass(frozen=True, slots=True)
class Event:
    """One published event.

    Attributes:
        id: the broker's opaque id; the subscription resumes after it.
        topic: the topic it was published to.
        event: the publisher's event type, or ``None`` when untyped.
        data: the data: a ``str`` for text, the decoded value for JSON.
    """

    id: str
    topic: str
    event: str | None
    data: Any


@dataclass(frozen=True, slots=True)
class Notice:
    """Base class of the stream notices a subscription yields alongside events."""


@dataclass(frozen=True, slots=True)
class Dropped(Notice):
    """This subscriber fell behind and the broker dropped the oldest pending events.

    Attributes:
        count: how many events were dropped.
        resume_from: a position that replays them if the broker's history still has them
            (``BrokerClient.subscribe(..., last_event_id=resume_from)`` in a second subscription).
    """

    count: int
    resume_from: str

    def __str__(self) -> str:
        return f"dropped {self.count} events (resume_from={self.resume_from})"


@dataclass(frozen=True, slots=True)
class Reset(Notice):
    """A resume was not exact: events may have been missed between ``requested`` and now.

    Attributes:
        position: where the stream now continues from.
        requested: the id the client asked to resume after.
        reason: ``"unknown"``, ``"evicted"`` or ``"unparsable"``.
    """

    position: str
    requested: str
    reason: str

    def __str__(self) -> str:
        return f"inexact resume ({self.reason}): requested {self.requested}, now at {self.position}"


@dataclass(frozen=True, slots=True)
class Ended(Notice):
    """The topic was closed by its publisher's final event: nothing more will come on it.

    When every topic of the subscription has ended, the iteration stops after this notice
    (the subscription does not reconnect).

    Attributes:
        topic: the closed topic.
    """

    topic: str

    def __str__(self) -> str:
        return f"topic {self.topic} ended"


@dataclass(frozen=True, slots=True)
class Reconnecting(Notice):
    """The stream ended; the subscription will reconnect after ``delay`` seconds.

    Attributes:
        attempt: consecutive failed attempts so far (1 after the first failure).
        delay: seconds until the next attempt (jittered).
        error: why the stream ended, or ``None`` when the broker asked for the reconnect
            (``broker.shutdown``).
    """

    attempt: int
    delay: float
    error: BrokerError | None

    def __str__(self) -> str:
        why = "broker shutting down" if self.error is None else str(self.error)
        return f"reconnecting in {self.delay:.1f} s (attempt {self.attempt}): {why}"


@dataclass(frozen=True, slots=True)
class FailedOver(Notice):
    """The stream now comes from another node than before.

    Attributes:
        url: the node's base URL.
    """

    url: str

    def __str__(self) -> str:
        return f"failed over to {self.url}"


@dataclass(frozen=True, slots=True)
class TransportChanged(Notice):
    """``transport="auto"`` gave up on SSE and uses WebSocket from now on.

    Attributes:
        transport: the transport now in use (``"ws"``).
        reason: why SSE was abandoned.
    """

    transport: str
    reason: str

    def __str__(self) -> str:
        return f"switched to {self.transport}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Control:
    """A ``broker.*`` message the subscription consumes itself."""


@dataclass(frozen=True, slots=True)
class Started(Control):
    """``broker.start``: the stream is open and continues after ``position``.

    ``heartbeat_seconds`` is the broker's announced heartbeat period, when it sends one.
    """

    position: str
    resumed: bool
    heartbeat_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Stopping(Control):
    """``broker.shutdown``: the node is going away; reconnect after ``retry_ms``."""

    retry_ms: int


Decoded = Event | Notice | Control | None


def decode_sse(sse: ServerSentEvent) -> Decoded:
    """Decode one SSE event of an ``envelope=1`` stream.

    With ``envelope=1`` every ``data:`` is the JSON object ``{"id", "topic", "event", "data"}``;
    user events come without an ``event:`` line (the type is in the envelope), ``broker.*``
    notices keep theirs.

    Args:
        sse: the parsed event.

    Returns:
        What it means (see the module docstring).

    Raises:
        ProtocolError: the data is not the JSON envelope the protocol promises.
    """
    value = _loads(sse.data)
    if sse.event.startswith("broker."):
        if isinstance(value, dict) and value.get("event") == sse.event and "data" in value:
            value = value["data"]  # an enveloped notice
        return _decode_notice(sse.event, sse.id, value)
    if not isinstance(value, dict) or "topic" not in value or "data" not in value:
        raise ProtocolError(f"SSE data is not an envelope (envelope=1 ignored?): {sse.data:.200}")
    return decode_message(value, default_id=sse.id)


def decode_message(value: Any, *, default_id: str = "") -> Decoded:
    """Decode one ``{"id", "topic", "event", "data"}`` object (a WebSocket frame or envelope).

    Args:
        value: the decoded JSON object.
        default_id: the id to use when the object has none (the SSE ``id:`` line).

    Returns:
        What it means (see the module docstring).

    Raises:
        ProtocolError: ``value`` does not have the promised shape.
    """
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a JSON object, got {type(value).__name__}")
    event = value.get("event")
    ident = value.get("id")
    ident = ident if isinstance(ident, str) and ident else default_id
    data = value.get("data")
    if isinstance(event, str) and event.startswith("broker."):
        return _decode_notice(event, ident, data)
    topic = value.get("topic")
    if not isinstance(topic, str) or not ident:
        raise ProtocolError(f"event without topic or id: {value!r:.200}")
    if event == "message" or not isinstance(event, str):
        event = None
    return Event(id=ident, topic=topic, event=event, data=data)


def _decode_notice(event: str, ident: str, data: Any) -> Decoded:
    fields = data if isinstance(data, dict) else {}
    try:
        if event == "broker.start":
            heartbeat = fields.get("heartbeat_seconds")
            return Started(
                position=ident or str(fields["position"]),
                resumed=bool(fields.get("resumed")),
                heartbeat_seconds=float(heartbeat) if heartbeat is not None else None,
            )
        if event == "broker.reset":
            return Reset(
                position=ident or str(fields["position"]),
                requested=str(fields.get("requested", "")),
                reason=str(fields.get("reason", "")),
            )
        if event == "broker.dropped":
            return Dropped(
                count=int(fields["dropped"]),
                resume_from=ident or str(fields["resume_from"]),
            )
        if event == "broker.end":
            return Ended(topic=str(fields["topic"]))
        if event == "broker.shutdown":
            return Stopping(retry_ms=int(fields.get("retry_ms", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed {event} notice: {data!r:.200}") from exc
    return None  # broker.heartbeat, broker.ack, broker.command_error, later additions


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"event data is not JSON: {text!r:.200}") from exc
