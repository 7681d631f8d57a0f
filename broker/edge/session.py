"""One stream session and one publish entry for every transport.

Theory of operation. A stream opens in the same steps whichever transport carries it (SSE on
the data plane's raw socket, SSE on a connection hypercorn serves, WebSocket), and
:func:`open_stream` is those steps, written once:

1. **admit**: the policy judges the request (auth, connection limits, and for a WebSocket
   upgrade its ``Origin``: ``policy.py``) and names the client;
2. **where to start**: the resume id (``Last-Event-ID`` or ``last_event_id``) and the start
   options (``last``, ``since``);
3. **prepare**: the engine gets ready. On the mesh a client that was on another node waits
   (up to ``catchup_seconds``) for this node to catch up with the position it brings, since
   ids sent from behind would move the client backwards (docs/cluster-design.md); on Redis the
   engine reads what the start needs;
4. **degraded or over**: an unreachable engine gets the transport's degraded answer; a client
   that has every event of its closed topics gets the transport's "over" answer (SSE: 204,
   which makes an EventSource stop reconnecting for good);
5. **accept**: the transport's response head (SSE 200, WebSocket 101);
6. **subscribe**: a :class:`~broker.hub.subscriber.Subscriber` in the stream's own nursery,
   registered by the hub's ``subscribe`` scope while the transport waits for the client to
   leave. Leaving the scope unregisters it whatever the reason (client gone, eviction,
   shutdown, error, the token's expiry), and the nursery takes the writer task with it.
   A stream opened with a token lives no longer than the token: at its ``exp`` (plus
   leeway, turned into trio time once, here) the stream gets ``broker.auth_expired`` with
   no id (the client's position is unchanged; it reconnects with a fresh token and resumes
   exactly) and the codec's ``expired`` bytes (WebSocket: close 1008), then ends;
7. **log**: one line per closed stream, counted in :class:`Streams`.

A :class:`StreamTransport` is what differs between transports: how to refuse, how to answer
"degraded" and "over", what to send first, and how to wait for the client to leave.

:func:`publish` is the one publish entry both HTTP planes call: decode, admit, publish,
answer. It is always a coroutine; on the in-memory/mesh engine it contains no checkpoint, so
fan-out stays atomic (STYLE rule 7), and on a store it awaits the store's acknowledgement.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from ..core.errors import BadEventId, BadRequest, ClientError, UnsupportedMediaType
from ..core.items import PublishItem
from ..core.topics import check_event_type
from ..hub import Hub, Unavailable
from ..hub.engine import Acknowledger
from ..hub.replay import StartAt
from ..hub.subscriber import Codec, Sink, Subscriber
from ..wire import codecs
from ..wire.sse import SseCodec
from .auth import Identity
from .policy import Policy
from .routes import Route, start_at

log = logging.getLogger(__name__)

Answer = dict[str, object]

#: An id echoed back to a refused client must be a plain id (no line breaks).
_PLAIN_ID: Final = re.compile(r"[A-Za-z0-9._~-]{1,1024}")


@dataclass(frozen=True, slots=True)
class Limits:
    """The edge's request and stream limits (from ``[limits]`` and ``[stream]`` in config)."""

    max_body_bytes: int = 1024 * 1024
    max_head_bytes: int = 16 * 1024
    idle_timeout: float = 60.0
    #: Seconds a request head may take to arrive (and a body's grace before its rate counts;
    #: neither longer than ``idle_timeout``).
    head_timeout: float = 10.0
    #: Bytes a second a body must average after its grace; 0: a body gets ``idle_timeout``.
    min_body_rate: int = 1024
    queue_events: int = 1024
    queue_bytes: int = 4 * 1024 * 1024
    send_timeout: float = 30.0
    max_topics_per_subscription: int = 64


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """Open streams by transport, and how many were ever opened."""

    open: int
    sse: int
    ws: int
    opened_total: int


class Streams:
    """What every stream on this node shares: hub, policy, limits, and the count of streams.

    One instance serves the data plane and the ASGI adapter alike, so a stream is counted
    the same whichever connection it arrived on.
    """

    def __init__(
        self, hub: Hub, policy: Policy, limits: Limits, *, catchup_seconds: float = 0.0
    ) -> None:
        self.hub = hub
        self.policy = policy
        self.limits = limits
        self.catchup_seconds = catchup_seconds
        self._open = {"sse": 0, "ws": 0}
        self._opened_total = 0

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(
            open=sum(self._open.values()),
            sse=self._open["sse"],
            ws=self._open["ws"],
            opened_total=self._opened_total,
        )

    def _opened(self, kind: str) -> None:
        self._open[kind] += 1
        self._opened_total += 1

    def _closed(self, kind: str) -> None:
        self._open[kind] -= 1


class StreamTransport(Protocol):
    """One transport's side of a stream session (see the module docstring, steps 4-6)."""

    #: ``"sse"`` or ``"ws"``: what the stream is counted as.
    kind: str

    async def refuse(self, error: ClientError) -> None:
        """Answer a refused request (4xx, or 503 + Retry-After) before anything was sent."""

    async def degrade(self, error: Unavailable, resume_from: str | None) -> None:
        """Answer while the engine is unreachable (SSE: a notice the browser retries on)."""

    async def over(self) -> bool:
        """Answer a client that already has every event of its closed topics.

        Returns ``False`` to stream anyway (the replay then ends the stream at once).
        """

    async def accept(self) -> bytes | None:
        """Open the stream; return the bytes to send first (corked with the replay).

        ``None`` means there is nothing to stream: a ``HEAD`` request, a failed upgrade, or a
        client that left; the transport has answered what it could.
        """

    def sink(self) -> Sink:
        """Where the subscriber writes (called after :meth:`accept`)."""

    def codec(self) -> Codec:
        """How the subscriber frames events (called after :meth:`accept`)."""

    async def serve(
        self, subscriber: Subscriber, nursery: trio.Nursery, identity: Identity
    ) -> None:
        """Return when the client has left (or the transport gave up on it)."""

    async def finish(self, subscriber: Subscriber) -> None:
        """After the stream: whatever the transport still owes the client."""


async def open_stream(
    streams: Streams,
    transport: StreamTransport,
    route: Route,
    headers: Mapping[str, str],
    *,
    peer: str,
    remote: str = "?",
    label: str | None = None,
) -> Identity | None:
    """Serve one subscribe request as a stream on ``transport``, start to end.

    Args:
        peer: the client's address (logs, limits).
        remote: ``host:port`` of the client, and ``label`` the transport's name when it is
            not ``transport.kind`` (``h2``): the admin API shows both.

    Returns:
        the client's identity once admitted (``None`` if refused).

    Cancellation leaves the subscribe scope and the stream's nursery, so the subscription
    and its writer end with the caller; the closing line is logged either way.
    """
    hub = streams.hub
    try:
        identity = streams.policy.admit_subscribe(route, headers, upgrade=transport.kind == "ws")
        resume_from, start = stream_options(route, headers)
    except ClientError as error:
        await transport.refuse(error)
        return None
    try:
        await hub.prepare(
            route.topics,
            resume_from=resume_from,
            start_at=start,
            catchup_seconds=streams.catchup_seconds,
        )
    except Unavailable as error:
        await transport.degrade(error, resume_from)
        return identity
    if hub.stream_is_over(route.topics, resume_from) and await transport.over():
        return identity
    first = await transport.accept()
    if first is None:
        return identity
    limits = streams.limits
    name = f"{transport.kind} {peer}"
    streams._opened(transport.kind)
    opened = trio.current_time()
    subscriber: Subscriber | None = None
    try:
        async with trio.open_nursery() as nursery:
            subscriber = Subscriber(
                sink=transport.sink(),
                codec=transport.codec(),
                nursery=nursery,
                position="",
                max_events=limits.queue_events,
                max_bytes=limits.queue_bytes,
                send_timeout=limits.send_timeout,
                name=name,
                latency=hub.latency,
                transport=label or transport.kind,
                remote=remote,
                subject=identity.subject,
            )
            # What opens the stream, broker.start and the replay's first frames leave in
            # one write: a system call less per new stream.
            subscriber.cork()
            if first:
                subscriber.send_control(first)
            # This frame lives as long as the stream: drop what only the start needed.
            del first, headers
            with hub.subscribe(subscriber, route.topics, resume_from=resume_from, start_at=start):
                subscriber.uncork()
                if identity.expires is None:  # no cancel scope held by an idle stream
                    await transport.serve(subscriber, nursery, identity)
                else:
                    with trio.move_on_at(stream_deadline(identity)) as expiry:
                        await transport.serve(subscriber, nursery, identity)
                    if expiry.cancelled_caught:
                        _end_on_expiry(subscriber, identity)
                        await trio.sleep_forever()  # the writer ends us once it is out
                subscriber.end("gone")
    finally:
        streams._closed(transport.kind)
        if subscriber is not None:
            _log_closed(transport.kind, peer, opened, subscriber)
    assert subscriber is not None  # made first thing in the nursery, which ended normally
    await transport.finish(subscriber)
    return identity


def stream_deadline(identity: Identity) -> float:
    """The trio time at which a stream opened with ``identity`` ends (``inf``: never).

    The token's ``exp`` (plus leeway) is wall-clock time; it is turned into trio time once,
    when the stream opens, so the stream's timer is an ordinary trio deadline.
    """
    if identity.expires is None:
        return math.inf
    return trio.current_time() + (identity.expires - time.time())


def _end_on_expiry(subscriber: Subscriber, identity: Identity) -> None:
    """End a stream whose token expired: ``broker.auth_expired`` (no id), then close."""
    log.info("%s: token expired, stream closed", subscriber)
    payload = {
        "reason": "the token that opened this stream expired; reconnect with a fresh one "
        "and your last event id",
        "expired_at": identity.expires,
    }
    codec = subscriber.codec
    notice = codec.notice("broker.auth_expired", None, payload)
    subscriber.close(notice + codec.expired, "auth_expired")


def stream_options(route: Route, headers: Mapping[str, str]) -> tuple[str | None, StartAt | None]:
    """A subscribe request's resume id and start options.

    Raises:
        BadEventId, BadRequest.
    """
    return resume_id(route, headers), start_at(route, time.time())


def resume_id(route: Route, headers: Mapping[str, str]) -> str | None:
    """The id a subscriber resumes from: ``Last-Event-ID`` header, else the query.

    Raises:
        BadEventId: a header value that could never be an id (too long).
    """
    value = headers.get("last-event-id")
    if value is None:
        value = route.param("last_event_id")
    if value is None or value.strip() == "":
        return None
    if len(value) > 1024:
        raise BadEventId("Last-Event-ID is longer than 1024 characters")
    return value.strip()


def degraded_notice(route: Route, error: Unavailable, resume_from: str | None) -> bytes:
    """What an SSE request gets while the store is unreachable: a notice, then the end.

    The answer is ``200`` because a browser never reconnects after any other status; the
    jittered ``retry:`` spreads the reconnections, and the notice's id is the client's
    own id (when it is a plain id) so the browser resumes from where it was.
    """
    retry_ms = int(error.retry_after * 1000 * random.uniform(1.0, 2.0))
    event_id = resume_from if resume_from and _PLAIN_ID.fullmatch(resume_from) else ""
    return SseCodec(envelope=route.flag("envelope")).notice(
        "broker.degraded",
        event_id,
        {"reason": "store unreachable", "position": event_id, "retry_ms": retry_ms},
        retry_ms,
    )


async def publish(
    hub: Hub,
    policy: Policy,
    route: Route,
    headers: Mapping[str, str],
    body: bytes,
    peer: str,
) -> Answer:
    """Decode, admit and publish one ``POST /topics/{topic}`` or ``POST /publish`` body.

    Both planes answer publishes with this, so they decode and judge them alike. On the
    in-memory/mesh engine the event is published with no checkpoint (fan-out is atomic);
    on a store (Redis) this returns once the store has the events.

    Returns:
        the ``202`` answer's JSON.

    Raises:
        ClientError: bad body, topic or type; auth or rate refusals; a closed topic;
            ``Unavailable`` (503) when the store is unreachable.
    """
    content_type = headers.get("content-type")
    now = trio.current_time()
    try:
        if route.kind == "batch":
            items = codecs.decode_batch(content_type, body)
            policy.admit_publish(route, headers, peer, [i.topic for i in items], now)
            if hub.synchronous:  # the memory/mesh engine: publish now, no checkpoint
                acknowledger = _replicated(hub, route, headers)
                events = hub.publish_batch_nowait(items)
                if acknowledger is not None and events:
                    await acknowledger.confirm(events[-1].seq)
                return {"ids": [e.id for e in events]}
            return {"ids": await hub.publish(items)}
        policy.admit_publish(route, headers, peer, [route.topics[0]], now)
        try:
            event_type = check_event_type(route.param("event"))
            data, is_json = codecs.decode_body(content_type, body)
            retain, final = route.flag("retain"), route.flag("final")
        except UnsupportedMediaType:
            # Forms are rare: recognised here, the text/JSON path pays nothing for them.
            if codecs.media_type(content_type) != codecs.FORM:
                raise
            form = codecs.decode_form(body)  # curl -d, an HTML form: fields replace the query
            event_type = check_event_type(form.event or route.param("event"))
            data, is_json = form.data, False
            retain = route.flag("retain") if form.retain is None else form.retain
            final = route.flag("final") if form.final is None else form.final
    except UnsupportedMediaType as error:
        raise UnsupportedMediaType(f"{error.message}; {curl_example(route, headers)}") from None
    if hub.synchronous:
        acknowledger = _replicated(hub, route, headers)
        event = hub.publish_nowait(
            route.topics[0], data, event_type=event_type, is_json=is_json, retain=retain,
            final=final,
        )  # fmt: skip
        if acknowledger is not None:
            await acknowledger.confirm(event.seq)
        return {"id": event.id, "topic": event.topic}
    item = PublishItem(route.topics[0], data, event_type, is_json)
    event_ids = await hub.publish([item], retain=retain, final=final)
    return {"id": event_ids[0], "topic": item.topic}


ACK_HEADER: Final = "x-broker-ack"


def _replicated(hub: Hub, route: Route, headers: Mapping[str, str]) -> Acknowledger | None:
    """The acknowledger if this publish is answered only once peers stored it.

    The level is the ``ack`` query parameter, else the ``X-Broker-Ack`` header, else the
    ``[cluster] ack`` setting. Checked before publishing: with too few peers linked the
    publish is refused (503 not_replicated) and nothing is stored.

    Raises:
        BadRequest: an unknown level, or ``replicated`` without a mesh cluster.
        NotReplicated: fewer than ``min_replicas`` peers are linked.
    """
    acknowledger = hub.acknowledger
    level = route.param("ack") or headers.get(ACK_HEADER)
    if level is None:
        if acknowledger is None or acknowledger.default_ack == "local":
            return None
        level = acknowledger.default_ack
    if level == "local":
        return None
    if level != "replicated":
        raise BadRequest(f"ack must be local or replicated, got {level[:40]!r}")
    if acknowledger is None:
        raise BadRequest("ack=replicated needs a mesh cluster ([cluster] engine = mesh)")
    acknowledger.check_replicas()
    return acknowledger


_HOST: Final = re.compile(
    r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?"
)


def curl_example(route: Route, headers: Mapping[str, str]) -> str:
    """A curl line that publishes to this broker, for a 415's message.

    The host is the request's own ``Host`` when it looks like one (behind a proxy, the
    address the client used), else the default address; the topic is the request's.
    """
    host = headers.get("host", "")
    if not _HOST.fullmatch(host):
        host = "127.0.0.1:8080"
    scheme = "https" if headers.get("x-forwarded-proto", "").lower() == "https" else "http"
    if route.kind == "batch":
        body = '{"events": [{"topic": "jobs/1", "data": "hello"}]}'
        return (
            "for example: curl -H 'Content-Type: application/json' "
            f"-d '{body}' {scheme}://{host}/publish"
        )
    return f"for example: curl -d data=hello {scheme}://{host}/topics/{route.topics[0]}"


def _log_closed(kind: str, peer: str, opened: float, subscriber: Subscriber) -> None:
    log.info(
        "stream closed transport=%s peer=%s topics=%d duration_s=%.1f delivered=%d "
        "dropped=%d reason=%s",
        kind,
        peer,
        len(subscriber.topics),
        trio.current_time() - opened,
        subscriber.delivered,
        subscriber.mailbox.dropped,
        subscriber.end_reason or "gone",
    )
