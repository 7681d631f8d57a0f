"""Event ids on the Redis engine: stream entry ids, one position per topic (sans-IO).

Theory of operation. Each topic is one Redis Stream, so each event has a stream entry id
``<ms>-<seq>`` that Redis assigns, totally ordered within the topic and the same on every
node. A broker event id maps one-to-one to it: resuming is "every entry after this one",
a range read that any node can do, exact, with no clock assumption across nodes.

Internally an entry id is *packed* into one integer, ``ms << 64 | seq``, so it compares
and sorts like the entry id; ``0`` stands for "before the first entry" (``0-0``).

Wire form. A stream position is one *token* per topic: ``<tag>_<ms base 36>`` (plus
``_<seq base 36>`` when seq is not 0), where ``tag`` is 5 base-36 characters of the
CRC-32 of the topic name. A subscription's id holds one token per topic, sorted by topic
name and joined by ``.``::

    k3j9x_mj8k2a0q                      one topic (14-16 bytes)
    0h1pz_mj8k2a0q.k3j9x_mj8k29zz_1      two topics

Why tagged tokens rather than bare positions in sorted-topic order: a WebSocket
subscriber changes its topics by command, and a client may resume with a different topic
set than the id was written for. A tagged token applies to its topic wherever that topic
sits in the new set; topics the id does not name start live (the client never asked for
them), and an id that names none of the subscription's topics is not this stream's id.
The tag costs 6 bytes per topic: one topic takes 14-16 bytes, 3 about 46, 8 about 127.

Only ``[a-z0-9._]`` appears, so ``Last-Event-ID`` never needs a CORS preflight. A mesh id
(``origin-seq`` pairs, always with ``-``) never parses here, and these ids (always with
``_``, never ``-``) never parse as mesh ids: an id from the other engine is reported as
``unparsable``, never misread.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Final

from ...core.errors import BadEventId

#: The packed position before the first entry of any stream.
ZERO: Final = 0
MAX_ID_CHARS: Final = 1024
TAG_CHARS: Final = 5
_SEQ_BITS: Final = 64
_SEQ_MASK: Final = (1 << _SEQ_BITS) - 1
_DIGITS: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_TOKEN_RE: Final = re.compile(
    r"([0-9a-z]{5})_(0|[1-9a-z][0-9a-z]{0,12})(?:_([1-9a-z][0-9a-z]{0,13}))?"
)
_ENTRY_RE: Final = re.compile(r"(\d{1,20})-(\d{1,20})")


def _base36(number: int) -> str:
    if number == 0:
        return "0"
    out = []
    while number:
        number, digit = divmod(number, 36)
        out.append(_DIGITS[digit])
    return "".join(reversed(out))


def tag(topic: str) -> str:
    """The 5-character tag that names ``topic`` inside an id."""
    return _base36(zlib.crc32(topic.encode()) % 36**TAG_CHARS).rjust(TAG_CHARS, "0")


def pack(entry_id: str) -> int:
    """A Redis stream entry id (``"1718000000000-3"``) as one comparable integer.

    Raises:
        ValueError: not an entry id.
    """
    found = _ENTRY_RE.fullmatch(entry_id)
    if found is None:
        raise ValueError(f"not a stream entry id: {entry_id!r}")
    return int(found.group(1)) << _SEQ_BITS | int(found.group(2))


def unpack(packed: int) -> str:
    """The Redis form of a packed entry id (``0`` is ``"0-0"``)."""
    return f"{packed >> _SEQ_BITS}-{packed & _SEQ_MASK}"


def token(topic_tag: str, packed: int) -> str:
    """One topic's position as it appears in an id."""
    ms, seq = packed >> _SEQ_BITS, packed & _SEQ_MASK
    if seq:
        return f"{topic_tag}_{_base36(ms)}_{_base36(seq)}"
    return f"{topic_tag}_{_base36(ms)}"


def format_position(tokens: Iterable[str]) -> str:
    """Join per-topic tokens (already in topic-name order) into an id."""
    return ".".join(tokens)


def format_positions(positions: Mapping[str, int]) -> str:
    """An id for ``{topic: packed position}``, tokens in topic-name order."""
    return ".".join(token(tag(topic), positions[topic]) for topic in sorted(positions))


def parse_position(text: str) -> dict[str, int]:
    """Decode an id into ``{tag: packed position}``.

    Raises:
        BadEventId: the text is not an id this engine could have written (a mesh id, an
            older format, garbage).
    """
    if not text or len(text) > MAX_ID_CHARS:
        raise BadEventId("event id is empty or too long")
    out: dict[str, int] = {}
    for part in text.split("."):
        found = _TOKEN_RE.fullmatch(part)
        if found is None:
            raise BadEventId(f"unparsable event id {text[:80]!r}")
        topic_tag, ms, seq = found.group(1), found.group(2), found.group(3)
        if topic_tag in out:
            raise BadEventId(f"event id names tag {topic_tag!r} twice")
        out[topic_tag] = int(ms, 36) << _SEQ_BITS | (int(seq, 36) if seq else 0)
    return out


def requested_positions(
    topics: Iterable[str], parsed: Mapping[str, int]
) -> tuple[dict[str, int], bool]:
    """Map a parsed id onto a subscription's topics.

    Returns:
        ``(positions, usable)``: the packed position the id gives for each topic it names
        (topics it does not name are absent: they start live), and ``False`` when the id
        names none of the topics or two topics share a tag (it cannot be this stream's id).
    """
    by_tag: dict[str, str] = {}
    positions: dict[str, int] = {}
    for topic in topics:
        topic_tag = tag(topic)
        if topic_tag in by_tag:
            return {}, False
        by_tag[topic_tag] = topic
        if topic_tag in parsed:
            positions[topic] = parsed[topic_tag]
    return positions, bool(positions)
