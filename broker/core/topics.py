"""Topic names and event types: what is allowed, checked once at the edge (sans-IO).

A topic is 1-200 bytes of segments ``[A-Za-z0-9_.:~-]+`` joined by single ``/``.
No segment is ``.`` or ``..`` (proxies normalise those away), and the last segment is
not ``events`` or ``ws``, which name the subscribe endpoints under ``/topics/``.

An event type is 1-64 chars of ``[A-Za-z0-9_.:-]``. ``message`` is what a browser calls an
untyped event, so it is stored as "no type". ``error`` and ``open`` are refused because an
``EventSource`` fires its own ``onerror``/``onopen`` handlers for them, and ``broker.*`` is
reserved for the broker's own notices.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Final

from .errors import BadEventType, BadTopic

MAX_TOPIC_BYTES: Final = 200
MAX_EVENT_TYPE_CHARS: Final = 64
RESERVED_LAST_SEGMENTS: Final = frozenset({"events", "ws"})
RESERVED_EVENT_TYPES: Final = frozenset({"error", "open"})

_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9_.:~-]+(?:/[A-Za-z0-9_.:~-]+)*")
_EVENT_TYPE_RE: Final = re.compile(r"[A-Za-z0-9_.:-]+")

#: The ``cache_clear`` of every memo keyed by topic names (:func:`remember_topic_memo`).
_TOPIC_MEMOS: list[Callable[[], None]] = []


def remember_topic_memo(cache_clear: Callable[[], None]) -> None:
    """Have :func:`forget_topic_memos` empty a memo keyed by topic names."""
    _TOPIC_MEMOS.append(cache_clear)


def forget_topic_memos() -> None:
    """Empty the memos keyed by topic names, after many topics left memory (expiry).

    Their entries are the last few thousand names used: small objects that sit between
    the expired topics' in the allocator's 1 MiB arenas and keep them all alive (100 000
    expired topics: 36 MiB of arenas held by the two memos, load/durable.py --expiry).
    """
    for cache_clear in _TOPIC_MEMOS:
        cache_clear()


@functools.lru_cache(maxsize=4096)
def check_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid topic name (valid names are memoized).

    Raises:
        BadTopic: with a message that says which rule it breaks.
    """
    if not topic:
        raise BadTopic("topic name is empty")
    if len(topic) > MAX_TOPIC_BYTES:
        raise BadTopic(f"topic name is longer than {MAX_TOPIC_BYTES} characters")
    if _TOPIC_RE.fullmatch(topic) is None:
        raise BadTopic(
            f"invalid topic {topic!r}: use segments of A-Z a-z 0-9 _ . : ~ - "
            "separated by single '/'"
        )
    segments = topic.split("/")
    if any(s in (".", "..") for s in segments):
        raise BadTopic(f"invalid topic {topic!r}: '.' and '..' are not segments")
    if segments[-1] in RESERVED_LAST_SEGMENTS:
        raise BadTopic(f"invalid topic {topic!r}: the last segment may not be 'events' or 'ws'")
    return topic


remember_topic_memo(check_topic.cache_clear)


def check_event_type(event_type: str | None) -> str | None:
    """Return the normalised event type (``None`` for untyped) or raise BadEventType."""
    if event_type is None or event_type == "" or event_type == "message":
        return None
    if len(event_type) > MAX_EVENT_TYPE_CHARS or _EVENT_TYPE_RE.fullmatch(event_type) is None:
        raise BadEventType(
            f"invalid event type {event_type!r}: 1-{MAX_EVENT_TYPE_CHARS} characters "
            "of A-Z a-z 0-9 _ . : -"
        )
    if event_type in RESERVED_EVENT_TYPES or event_type.startswith("broker."):
        raise BadEventType(
            f"event type {event_type!r} is reserved (an EventSource treats 'error' and "
            "'open' specially; 'broker.*' is the broker's own)"
        )
    return event_type
