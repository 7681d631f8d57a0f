"""Commands a WebSocket client sends: subscribe, unsubscribe, publish (sans-IO).

Each may carry a ``ref`` that is echoed in the ``broker.ack`` or ``broker.command_error``
answer. A malformed command is answered, never punished by closing the socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import BadRequest, ClientError
from ..core.topics import check_event_type, check_topic
from .codecs import value_to_data


@dataclass(frozen=True, slots=True)
class Command:
    """A validated client command."""

    op: str
    ref: Any
    topics: tuple[str, ...] = ()
    data: str = ""
    is_json: bool = False
    event_type: str | None = None


def parse_command(value: Any, *, max_topics: int) -> Command:
    """Validate a decoded client message.

    Raises:
        ClientError: with a code for the ``broker.command_error`` answer.
    """
    if not isinstance(value, dict):
        raise BadRequest('a command is an object {"op": ...}')
    op = value.get("op")
    ref = value.get("ref")
    if op in ("subscribe", "unsubscribe"):
        topics = value.get("topics")
        if (
            not isinstance(topics, list)
            or not topics
            or not all(isinstance(t, str) for t in topics)
        ):
            raise BadRequest(f"{op} needs 'topics': a non-empty list of names")
        if len(topics) > max_topics:
            raise BadRequest(f"at most {max_topics} topics per command")
        return Command(op, ref, tuple(dict.fromkeys(check_topic(t) for t in topics)))
    if op == "publish":
        topic = value.get("topic")
        if not isinstance(topic, str):
            raise BadRequest("publish needs 'topic'")
        if "data" not in value:
            raise BadRequest("publish needs 'data'")
        event_type = value.get("event")
        if event_type is not None and not isinstance(event_type, str):
            raise BadRequest("'event' must be a string")
        data, is_json = value_to_data(value["data"])
        return Command(op, ref, (check_topic(topic),), data, is_json, check_event_type(event_type))
    raise BadRequest(f"unknown op {op!r}: use subscribe, unsubscribe or publish")


def error_payload(ref: Any, error: ClientError) -> dict[str, Any]:
    """``broker.command_error`` data; ``retry_after`` (seconds) where HTTP would send
    ``Retry-After`` (``store_unavailable``, ``rate_limited``)."""
    payload = {"ref": ref, "error": error.message, "code": error.code}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        payload["retry_after"] = retry_after
    return payload
