"""Event ids as stream positions (sans-IO).

Theory of operation (see docs/protocol.md; the design follows shared/CLUSTER.md):

* Every broker process has an *origin*: a short random token drawn at start, so a
  restarted node never reuses a sequence number that a client may hold.
* Each event an origin accepts gets ``seq`` = 1, 2, 3 … across all topics.
* A node delivers events in one sequence and keeps a *position vector*: for each origin,
  the last seq it has delivered. The id of an event is that vector right after the event,
  so every subscriber of the event on this node shares one id string (encoded once).
* A client that holds id P has seen, on its topics, exactly the events with
  ``seq <= P[origin]``; resuming means "every event in history with seq > P[origin]".

Wire form: pairs ``<origin>-<seq base 36>`` sorted by origin and joined by ``.``, for
example ``k3j9xq-1a.p0m2rt-7``. Only ``[a-z0-9.-]`` appears, so ``Last-Event-ID`` stays a
CORS-safe header and the id is at most ~10 bytes per origin. Clients treat it as opaque.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

from .errors import BadEventId

MAX_ID_CHARS: Final = 1024
ORIGIN_CHARS: Final = 6
_DIGITS: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_PAIRS: Final = tuple(a + b for a in _DIGITS for b in _DIGITS)
_ORIGIN_RE: Final = re.compile(r"[a-z0-9]{1,16}")
_SEQ_RE: Final = re.compile(r"0|[1-9a-z][0-9a-z]{0,12}")

Position = Mapping[str, int]


def new_origin() -> str:
    """Draw a fresh origin token: 6 base-36 characters (about 2·10⁹ values)."""
    number = int.from_bytes(os.urandom(5), "big") % 36**ORIGIN_CHARS
    return to_base36(number).rjust(ORIGIN_CHARS, "0")


def to_base36(number: int) -> str:
    """Format a non-negative integer in lowercase base 36."""
    if number < 1296:
        return _PAIRS[number].lstrip("0") or "0"
    high, low = divmod(number, 1296)
    prefix = _last_prefix.get(high)
    if prefix is None:  # every id is formatted, and seqs count up: the prefix repeats
        out = []
        rest = high
        while rest:
            rest, pair = divmod(rest, 1296)  # two digits a step
            out.append(_PAIRS[pair])
        prefix = "".join(reversed(out)).lstrip("0")
        _last_prefix.clear()
        _last_prefix[high] = prefix
    return prefix + _PAIRS[low]


_last_prefix: dict[int, str] = {}


def format_pair(origin: str, seq: int) -> str:
    """One ``origin-seq`` pair of an id."""
    return f"{origin}-{to_base36(seq)}"


def format_position(position: Position) -> str:
    """Encode a position vector as an event id."""
    return ".".join(format_pair(o, position[o]) for o in sorted(position))


def parse_position(text: str) -> dict[str, int]:
    """Decode an event id into a position vector.

    Raises:
        BadEventId: the text is not an id this broker could have written.
    """
    if not text or len(text) > MAX_ID_CHARS:
        raise BadEventId("event id is empty or too long")
    position: dict[str, int] = {}
    for pair in text.split("."):
        origin, sep, seq = pair.partition("-")
        if not sep or _ORIGIN_RE.fullmatch(origin) is None or _SEQ_RE.fullmatch(seq) is None:
            raise BadEventId(f"unparsable event id {text[:80]!r}")
        if origin in position:
            raise BadEventId(f"event id names origin {origin!r} twice")
        position[origin] = int(seq, 36)
    return position
