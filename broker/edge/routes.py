"""Which request is which: the hot routes of the data plane (sans-IO).

Both the lean data plane and the ASGI side (connections hypercorn serves: kept-alive after
a page, TLS, HTTP/2) route with :func:`match`, so a request means the same on both.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import parse_qs, unquote

from ..core.errors import BadRequest, MethodNotAllowed
from ..core.topics import check_topic, remember_topic_memo
from ..hub.replay import StartAt

Kind = Literal["publish", "batch", "sse", "ws"]
MAX_TOPICS_PER_REQUEST = 64


@dataclass(frozen=True, slots=True)
class Route:
    """A matched hot request.

    Attributes:
        kind: publish (one event), batch, sse or ws (subscribe).
        topics: the topics named (one for publish).
        query: the decoded query string, every value a list.
    """

    kind: Kind
    topics: tuple[str, ...]
    query: dict[str, list[str]]

    def param(self, name: str) -> str | None:
        """The last value of a query parameter, or ``None``."""
        values = self.query.get(name)
        return values[-1] if values else None

    def flag(self, name: str) -> bool:
        return (self.param(name) or "").lower() in ("1", "true", "yes", "on")


def split_target(target: str) -> tuple[str, str]:
    path, _, query = target.partition("?")
    return path, query


@functools.lru_cache(maxsize=1024)
def match(method: str, target: str, *, max_topics: int = MAX_TOPICS_PER_REQUEST) -> Route | None:
    """Match a request to a hot route, or ``None`` for everything else (pages, stats …).

    Memoized: publishers repeat the same few targets, and parsing one cost ~5 µs of a
    publish. A :class:`Route` is immutable by contract (nobody writes to its ``query``).

    Raises:
        BadTopic: a hot path names an invalid topic.
        BadRequest: a subscribe request names no topic, or too many.
        MethodNotAllowed: a hot path with the wrong method.
    """
    path, query_string = split_target(target)
    if method == "DELETE":
        return None  # topic administration lives in the app (control plane)
    if path.startswith("/topics/"):
        rest = path[len("/topics/") :]
        if rest.endswith("/events"):
            kind: Kind = "sse"
            topic = rest[: -len("/events")]
            allow = "GET"
        elif rest.endswith("/ws"):
            kind = "ws"
            topic = rest[: -len("/ws")]
            allow = "GET"
        else:
            kind = "publish"
            topic = rest
            allow = "POST"
        if method != allow and not (allow == "GET" and method == "HEAD"):
            raise MethodNotAllowed(f"{path} accepts {allow}", allow)
        topics: tuple[str, ...] = (check_topic(unquote(topic)),)
    elif path == "/publish":
        if method != "POST":
            raise MethodNotAllowed("/publish accepts POST", "POST")
        kind, topics = "batch", ()
    elif path in ("/events", "/ws"):
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{path} accepts GET", "GET")
        kind = "sse" if path == "/events" else "ws"
        topics = ()
    else:
        return None
    query = parse_qs(query_string, keep_blank_values=True) if query_string else {}
    if kind in ("sse", "ws") and not topics:
        named = query.get("topic", [])
        if not named and kind == "sse":  # a WebSocket may subscribe later, by command
            raise BadRequest(f"name at least one topic: {path}?topic=a&topic=b")
        topics = tuple(dict.fromkeys(check_topic(t) for t in named))
    if len(topics) > max_topics:
        raise BadRequest(f"at most {max_topics} topics per subscription")
    return Route(kind, topics, query)


remember_topic_memo(match.cache_clear)  # its targets name topics: emptied on expiry


def start_at(route: Route, now: float) -> StartAt | None:
    """The ``last``/``since`` options of a subscribe request.

    ``since`` is seconds before ``now`` (``since=3600``) or an RFC 3339 time
    (``since=2026-11-25T09:00:00Z``).

    Raises:
        BadRequest: a value that is neither.
    """
    last_text, since_text = route.param("last"), route.param("since")
    if last_text is None and since_text is None:
        return None
    last = None
    if last_text is not None:
        if not last_text.isdigit() or len(last_text) > 9:
            raise BadRequest(f"last must be a whole number of events, got {last_text[:40]!r}")
        last = int(last_text)
    since = None
    if since_text is not None:
        try:
            seconds = float(since_text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(since_text.replace("z", "Z"))
            except ValueError:
                raise BadRequest(
                    f"since must be seconds or an RFC 3339 time, got {since_text[:40]!r}"
                ) from None
            if moment.tzinfo is None:
                raise BadRequest("since needs a time zone (e.g. Z or +09:00)") from None
            since = moment.timestamp()
        else:
            if not math.isfinite(seconds) or seconds < 0:
                raise BadRequest("since must be a non-negative number of seconds")
            since = now - seconds
    return StartAt(last=last, since=since)
