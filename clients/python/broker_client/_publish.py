"""Publish requests and their answers (sans-IO).

Theory of operation: :func:`single_request` and :func:`batch_request` turn Python values into the
HTTP request the protocol describes (path, query, headers, body), and :func:`parse_answer` turns
the broker's answer into the id(s) or an error. The async :class:`BrokerClient` and the sync
:func:`publish` helper only move these bytes.

Encoding rules: ``str`` data is text (``text/plain``), every other JSON-serialisable value is JSON
(``application/json``, compact, non-ASCII kept as is); ``bytes`` are refused because the broker
has no binary data type. ``msgpack=True`` sends ``application/msgpack`` instead (a string stays
text, anything else becomes JSON on the broker).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgpack

from ._errors import ProtocolError, error_from_response

__all__ = [
    "PublishItem",
    "Request",
    "answer_id",
    "answer_ids",
    "batch_request",
    "parse_answer",
    "single_request",
]


@dataclass(frozen=True, slots=True)
class PublishItem:
    """One event of a batch.

    Attributes:
        topic: the topic.
        data: a ``str`` (text) or any JSON-serialisable value (JSON); not ``bytes``.
        event: the event type, or ``None`` for untyped.
    """

    topic: str
    data: Any
    event: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request to send to a node (the path is relative to its base URL)."""

    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


def single_request(
    topic: str,
    data: Any,
    *,
    event: str | None = None,
    retain: bool = False,
    final: bool = False,
    use_msgpack: bool = False,
) -> Request:
    """Build ``POST /topics/{topic}``.

    Args:
        topic: the topic name (validated by the broker).
        data: ``str`` for text, any other JSON-serialisable value for JSON.
        event: the event type, or ``None``.
        retain: keep it as the topic's current state for this type (``retain=1``).
        final: close the topic after it (``final=1``).
        use_msgpack: send the value msgpack-encoded.

    Returns:
        The request.

    Raises:
        TypeError: ``data`` is bytes, or not serialisable.
        ValueError: ``data`` holds NaN or infinity (not JSON).
    """
    _refuse_bytes(data)
    if use_msgpack:
        body, content_type = _packb(data), "application/msgpack"
    elif isinstance(data, str):
        body, content_type = data.encode("utf-8"), "text/plain; charset=utf-8"
    else:
        body, content_type = _dumps(data), "application/json"
    params = {"event": event} if event is not None else {}
    if retain:
        params["retain"] = "1"
    if final:
        params["final"] = "1"
    return Request(
        path="/topics/" + quote(topic, safe="/"),
        params=params,
        headers={"Content-Type": content_type},
        body=body,
    )


def batch_request(items: Iterable[PublishItem], *, use_msgpack: bool = False) -> Request:
    """Build ``POST /publish`` (all or nothing on the broker).

    Args:
        items: the events, in order.
        use_msgpack: send the batch msgpack-encoded.

    Returns:
        The request.

    Raises:
        TypeError: an item's data is bytes, or not serialisable.
        ValueError: the batch is empty, or a value holds NaN or infinity.
    """
    events: list[dict[str, Any]] = []
    for item in items:
        _refuse_bytes(item.data)
        entry: dict[str, Any] = {"topic": item.topic, "data": item.data}
        if item.event is not None:
            entry["event"] = item.event
        events.append(entry)
    if not events:
        raise ValueError("publish_batch needs at least one item")
    if use_msgpack:
        body, content_type = _packb({"events": events}), "application/msgpack"
    else:
        body, content_type = _dumps({"events": events}), "application/json"
    return Request(path="/publish", params={}, headers={"Content-Type": content_type}, body=body)


def parse_answer(status: int, body: bytes) -> dict[str, Any]:
    """Turn the broker's answer into its JSON object.

    Args:
        status: the HTTP status.
        body: the response body.

    Returns:
        The decoded 2xx body (``{"id": ..., "topic": ...}`` or ``{"ids": [...]}``).

    Raises:
        ClientError: 4xx.
        ServerError: 5xx.
        ProtocolError: any other status, or a 2xx body that is not a JSON object.
    """
    if not 200 <= status < 300:
        raise error_from_response(status, body)
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"publish answer is not JSON: {body[:200]!r}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"publish answer is not a JSON object: {body[:200]!r}")
    return value


def answer_id(answer: dict[str, Any]) -> str:
    """The ``id`` of a single-publish answer."""
    ident = answer.get("id")
    if not isinstance(ident, str):
        raise ProtocolError(f"publish answer without id: {answer!r:.200}")
    return ident


def answer_ids(answer: dict[str, Any]) -> list[str]:
    """The ``ids`` of a batch answer."""
    ids = answer.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ProtocolError(f"batch answer without ids: {answer!r:.200}")
    return ids


def _refuse_bytes(data: Any) -> None:
    if isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            "bytes data is not supported: publish str (text) or a JSON-serialisable value"
        )


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _packb(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot msgpack-encode {type(value).__name__}: {exc}") from exc
    return packed
