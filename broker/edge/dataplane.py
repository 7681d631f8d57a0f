"""The data plane: publish and subscribe on plain Trio, every other request to hypercorn.

Why a data plane of our own (figures in README "Why two planes"): a delivery through
quart-trio's streaming response costs 188-312 µs of CPU and a publish through Quart 0.9-2 ms;
a write straight to the socket costs 11-14 µs. So the broker's listener reads each request
head itself (``http1.py``), serves the hot routes here, and hands any other connection, with
the bytes already read, to hypercorn serving the quart-trio app.

A connection is served here request by request (keep-alive). Once a request is not hot,
the whole connection belongs to hypercorn for the rest of its life. A subscribe request
becomes a stream through ``session.open_stream``, like on every other transport; this
module only says how SSE looks on the raw socket (:class:`RawSseTransport`) and hands
WebSocket upgrades to ``wsconnection``.

Slow and greedy clients (docs/security.md "Slow and greedy clients"). Until a connection
becomes a stream or is handed off, it is in ``DataPlane._waiting`` with a deadline, and
``sweep_idle`` cancels it once the deadline has passed:

* a request head must be complete within ``head_timeout`` of accept (first request) or of
  its first byte (a kept-alive connection, which may idle ``idle_timeout`` before that);
* a body gets ``head_timeout`` of grace, then must keep coming at ``min_body_rate`` bytes/s
  on average (the deadline moves with every read);
* a timed-out head or body is answered ``408`` JSON and closed gracefully; a silent idle
  connection is just closed.

A connection answered before its request was read (an error, a refusal, a timeout) is
closed gracefully (``_close_gracefully``): shut down our side, discard what the client still
sends for a short bounded time, then close, so the kernel does not answer the client's
unread bytes with a reset that destroys the answer before the client reads it.

When the process is out of descriptors, the accept loop (listener.py) calls ``make_room``:
the connections that have waited longest for a request close at once.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import random
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import islice
from typing import Final, NamedTuple

import trio

from ..core.errors import ClientError, RequestTimeout
from ..core.guard import INTERNAL_ERROR_BODY, Fault, guard
from ..hub import Unavailable
from ..hub.subscriber import Codec, Sink, SocketSink, Subscriber
from ..wire.sse import PREAMBLE, SseCodec
from .auth import Identity
from .http1 import (
    ConnectionDone,
    Headers,
    HttpConnection,
    NotHttp1,
    Request,
    error_response,
    response,
)
from .limits import Admission, Overloaded, TooManyRequests
from .routes import Route, match
from .session import (
    Answer,
    Streams,
    degraded_notice,
    open_stream,
    publish,
)
from .wsconnection import WebSocketTransport, WsOptions

log = logging.getLogger(__name__)

SSE_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"\r\n"
)

Handoff = Callable[[trio.SocketStream, bytes], Awaitable[None]]

#: Longest pause before reading a rate-limited connection's next request.
MAX_RATE_HOLD_SECONDS: Final = 5.0
#: A connection answered before its request was read is closed this long after the answer
#: at the latest, having discarded at most ``LINGER_BYTES`` of what the client still sent.
LINGER_SECONDS: Final = 1.0
LINGER_BYTES: Final = 64 * 1024
#: Connections closed per ``make_room`` call (the descriptor table is full).
MAKE_ROOM_BATCH: Final = 16
#: Longest wait for closed connections to give their descriptors back.
MAKE_ROOM_WAIT_SECONDS: Final = 0.1


class _Phase(enum.Enum):
    """What a connection waits for when its deadline passes."""

    HEAD = "a request head"
    REQUEST = "a request body"
    HOLD = "a rate-limit pause"


class _After(enum.Enum):
    """What becomes of a connection after a request."""

    NEXT = "serve its next request"
    CLOSE = "close it"
    STREAM = "serve the request as a stream"
    HANDOFF = "hand the connection to hypercorn"


class _Outcome(NamedTuple):
    """A request's outcome: what comes next, and what that needs."""

    after: _After
    #: STREAM: the route matched and the CORS headers computed for the request, once.
    route: Route | None = None
    cors: Headers | None = None
    #: NEXT: seconds to wait before reading the next request (a rate-limited client).
    hold: float = 0.0


class _Stream(NamedTuple):
    """A request that becomes a stream, handed out of the request loop to be served."""

    transport: RawSseTransport | WebSocketTransport
    route: Route
    headers: dict[str, str]
    remote: str


_NEXT: Final = _Outcome(_After.NEXT)
_CLOSE: Final = _Outcome(_After.CLOSE)
_HANDOFF: Final = _Outcome(_After.HANDOFF)


@dataclass(frozen=True, slots=True)
class DataPlaneStatistics:
    """The data plane's connections, and how many of them are streams.

    Attributes:
        request_timeouts: heads or bodies that came too slowly (answered 408).
        closed_for_room: connections closed to free a descriptor (``make_room``).
    """

    connections: int
    streams: int
    request_timeouts: int = 0
    closed_for_room: int = 0


class DataPlane:
    """Serves connections accepted on the public port.

    Args:
        streams: the hub, policy and limits every stream and publish shares.
        handoff: serves the rest of a connection with hypercorn.
        ws_options: WebSocket settings.
        handoff_tls: serves a TLS connection with hypercorn (``None``: TLS is refused).
    """

    def __init__(
        self,
        streams: Streams,
        handoff: Handoff,
        ws_options: WsOptions | None = None,
        *,
        handoff_tls: Handoff | None = None,
    ) -> None:
        self.streams = streams
        self.hub = streams.hub
        self.policy = streams.policy
        self.limits = streams.limits
        #: Seconds a body may take before the minimum rate counts (never past the idle time).
        self.body_grace = min(self.limits.head_timeout, self.limits.idle_timeout)
        #: A body's first deadline, from its start (the grace, or without a rate the idle time).
        self._body_first = (
            self.body_grace if self.limits.min_body_rate else self.limits.idle_timeout
        )
        self.ws_options = ws_options or WsOptions()
        self.handoff = handoff
        self.handoff_tls = handoff_tls
        self.connections = 0
        self._streaming = 0
        #: Connections waiting for a request (or its body): their scope and its deadline, in
        #: the order their waits began (oldest first: what ``make_room`` closes).
        self._waiting: dict[trio.CancelScope, float] = {}
        self._clock = trio.current_time()
        self._closing = False
        #: Scopes cancelled by ``make_room`` (their connections close without an answer).
        self._shed: set[trio.CancelScope] = set()
        self._room_waiters: list[tuple[int, trio.Event]] = []
        self._closed = 0  # connections closed so far
        self._timeouts = 0
        self._closed_for_room = 0

    def statistics(self) -> DataPlaneStatistics:
        return DataPlaneStatistics(
            connections=self.connections,
            streams=self._streaming,
            request_timeouts=self._timeouts,
            closed_for_room=self._closed_for_room,
        )

    def close_idle(self) -> None:
        """Close connections that are waiting for their next request (shutdown)."""
        self._closing = True
        for scope in self._waiting:
            scope.cancel()

    async def sweep_idle(self) -> None:
        """Close connections whose wait is past its deadline, for the data plane's life.

        A sweep a second instead of a deadline per request: moving a cancel scope's deadline
        cost ~6 % of a publish's CPU (py-spy, load/ publish scenario). A connection's wait is
        stamped with this task's clock, so a timeout fires up to one period late or early.
        """
        limits = self.limits
        period = min(1.0, limits.idle_timeout / 4, limits.head_timeout / 4)
        while True:
            self._clock = now = trio.current_time()
            for scope, deadline in list(self._waiting.items()):
                if now > deadline:
                    scope.cancel()
            await trio.sleep(period)

    async def make_room(self) -> int:
        """Close the connections that have waited longest for a request (fd table full).

        Called by the accept loop on EMFILE/ENFILE. Returns once their descriptors are
        closed (or after ``MAKE_ROOM_WAIT_SECONDS``), with how many were closed.
        """
        candidates = (scope for scope in self._waiting if scope not in self._shed)
        victims = list(islice(candidates, MAKE_ROOM_BATCH))
        if not victims:
            return 0
        for scope in victims:
            self._shed.add(scope)
            scope.cancel()
        self._closed_for_room += len(victims)
        closed = trio.Event()
        # Counted in closures, not open connections: a handler that was started but has
        # not run yet is not counted in ``connections`` until it runs.
        self._room_waiters.append((self._closed + len(victims), closed))
        with trio.move_on_after(MAKE_ROOM_WAIT_SECONDS):
            await closed.wait()
        self._room_waiters = [w for w in self._room_waiters if w[1] is not closed]
        return len(victims)

    def _connection_closed(self) -> None:
        self.connections -= 1
        self._closed += 1
        if self._room_waiters:
            for target, event in self._room_waiters:
                if self._closed >= target:
                    event.set()

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection until it closes; always closes it.

        The connection runs under :func:`guard`: an unexpected exception in any of its
        phases (requests, an SSE or WebSocket stream, the hypercorn hand-off) is logged and
        counted, answered with a 500 if no response started, and ends this connection alone.
        """
        accepted = trio.current_time()
        peer = _peer_ip(stream.socket)
        admission = self.policy.connections.open(peer)
        self.connections += 1
        handed_off = False
        try:
            with guard(self.hub.faults, "http", _ConnectionName(stream.socket)) as fault:
                if admission is Admission.OVER_ADDRESS:
                    # Before its head: a slowloris from one address holds no descriptor long.
                    log.debug("%s: refused: too many connections from this address", peer)
                    error = Overloaded("too many connections from your address; retry later")
                    await self._close_gracefully(stream, error_response(error, keep_alive=False))
                else:
                    admitted = admission is Admission.ADMITTED
                    handed_off = await self._serve(stream, peer, admitted, accepted, fault)
            if fault and not fault.answered:
                with trio.move_on_after(1.0, shield=True):
                    await _send_quietly(stream, INTERNAL_ERROR)
        finally:
            if admission is Admission.ADMITTED:
                self.policy.connections.close(peer)
            if not handed_off:
                await trio.aclose_forcefully(stream)
            self._connection_closed()

    async def _serve(
        self,
        stream: trio.SocketStream,
        peer: str,
        admitted: bool,
        accepted: float,
        fault: Fault,
    ) -> bool:
        """Serve requests until one becomes a stream or a handoff; ``True`` if handed off.

        ``fault`` (the connection's guard) is told which phase the connection is in and
        whether the current exchange has started its response.
        """
        idle = trio.CancelScope()
        try:
            served = await self._serve_in(idle, stream, peer, admitted, accepted, fault)
        finally:
            self._shed.discard(idle)  # make_room may come too late to stop it
        if isinstance(served, bool):
            return served
        # The stream runs here, after the request loop's frame (its parser, buffer and
        # request) is gone: an idle stream keeps only what it needs (~0.6 KiB less each).
        transport = served.transport
        fault.where = transport.kind
        self._streaming += 1
        try:
            await open_stream(
                self.streams, transport, served.route, served.headers, peer=peer,
                remote=served.remote,
            )  # fmt: skip
        finally:
            self._streaming -= 1
            fault.answered = transport.answered  # a fault after this gets no 500
        return False

    async def _serve_in(
        self,
        idle: trio.CancelScope,
        stream: trio.SocketStream,
        peer: str,
        admitted: bool,
        accepted: float,
        fault: Fault,
    ) -> bool | _Stream:
        """The request loop: ``True`` if handed off, ``False`` if done, or a stream to serve."""
        limits = self.limits
        connection = HttpConnection(stream, max_head_bytes=limits.max_head_bytes)
        # One scope for the connection's requests, cancelled by sweep_idle, close_idle or
        # make_room: a scope per receive cost ~14 µs a publish (load/ profile, 2026-11-25).
        waiting = self._waiting
        after = _After.NEXT
        # Locals: the loop below runs per request (a global and an attribute cost ~30 ns).
        head_phase, request_phase = _Phase.HEAD, _Phase.REQUEST
        phase = head_phase
        idle_timeout = limits.idle_timeout
        with idle:
            timer = _Deadlines(self, idle)
            connection.on_head_started = timer.head_started
            connection.on_body_bytes = timer.body_bytes
            deadline = accepted + min(limits.head_timeout, limits.idle_timeout)
            while not self._closing:
                waiting[idle] = deadline
                phase = head_phase
                try:
                    request = await connection.next_request()
                except ConnectionDone:
                    return False
                except NotHttp1 as other:
                    del waiting[idle]
                    fault.where, fault.answered = "handoff", True
                    return await self._hand_over(stream, other)
                except ClientError as error:
                    await _send_quietly(stream, error_response(error, keep_alive=False))
                    after = _After.CLOSE
                    break
                finally:
                    waiting.pop(idle, None)
                if idle.cancel_called:  # shutdown came while the request arrived: not served
                    return False
                phase = request_phase
                outcome = await self._serve_request(connection, request, peer, admitted, timer)
                after = outcome.after
                if after is not _After.NEXT:
                    break
                if outcome.hold:
                    # Rate limited: its next request is read once a token is back. A client
                    # that honours Retry-After never notices; one that floods costs a request
                    # per refill instead of as many as it can send (load/ flood scenario).
                    phase = _Phase.HOLD
                    waiting[idle] = self._clock + idle_timeout
                    try:
                        await trio.sleep(outcome.hold)
                    finally:
                        waiting.pop(idle, None)
                deadline = self._clock + idle_timeout
        if idle.cancelled_caught:  # a deadline passed, shutdown, or make_room
            await self._cancelled(stream, connection, idle, phase, peer)
            return False
        if after is _After.CLOSE:
            await self._close_gracefully(stream)
            return False
        if after is _After.NEXT:  # closing
            return False
        # A stream (or the rest of the connection, handed off) is served outside the
        # request loop: an idle subscriber holds no scope and no frame it does not need.
        if after is _After.HANDOFF:
            # What hypercorn wrote is unknown here: a fault escaping it only closes.
            fault.where, fault.answered = "handoff", True
            await self.handoff(stream, request.raw)
            return True
        route, cors = outcome.route, outcome.cors or []
        assert route is not None
        transport: RawSseTransport | WebSocketTransport
        if route.kind == "sse":
            connection.finish_bodyless(request)
            transport = RawSseTransport(stream, route, cors, head_only=request.method == "HEAD")
        else:
            transport = WebSocketTransport(
                stream,
                request.raw,
                request.after_head,
                route,
                cors,
                streams=self.streams,
                options=self.ws_options,
                peer=peer,
            )
        return _Stream(transport, route, request.headers, _peer_address(stream.socket))

    async def _cancelled(
        self,
        stream: trio.SocketStream,
        connection: HttpConnection,
        idle: trio.CancelScope,
        phase: _Phase,
        peer: str,
    ) -> None:
        """A connection's wait was cancelled: answer ``408`` if a request was under way."""
        if idle in self._shed:
            self._shed.discard(idle)
            log.info("%s: closed to make room (out of file descriptors)", peer)
            return
        if self._closing:
            return
        if phase is _Phase.HEAD and connection.pending:
            what = f"request head not complete within {self.limits.head_timeout:g} s"
        elif phase is _Phase.REQUEST:
            what = f"request body slower than {self.limits.min_body_rate} bytes/s"
        else:
            log.debug("%s: idle connection closed", peer)
            return
        self._timeouts += 1
        log.info("%s: 408: %s; closing", peer, what)
        answer = error_response(RequestTimeout(what), keep_alive=False)
        await self._close_gracefully(stream, answer)

    async def _close_gracefully(self, stream: trio.SocketStream, answer: bytes = b"") -> None:
        """Send ``answer``, shut down our side, discard what the client still sends, close.

        Bounded: ``LINGER_SECONDS`` at most, ``LINGER_BYTES`` read at most (then the rest of
        the time passes without reading). The wait is in ``_waiting``, so ``make_room`` and
        shutdown end it early. The caller closes the socket.
        """
        sock = stream.socket
        with trio.CancelScope(deadline=trio.current_time() + LINGER_SECONDS) as scope:
            self._waiting[scope] = scope.deadline
            try:
                if answer:
                    await stream.send_all(answer)
                sock.shutdown(socket.SHUT_WR)
                fd = sock.fileno()
                budget = LINGER_BYTES
                while budget > 0:
                    await trio.lowlevel.wait_readable(fd)
                    try:
                        data = os.read(fd, min(budget, 65536))
                    except BlockingIOError:
                        continue
                    if not data:
                        return
                    budget -= len(data)
                await trio.sleep_forever()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            finally:
                self._waiting.pop(scope, None)
                self._shed.discard(scope)

    async def _serve_request(
        self,
        connection: HttpConnection,
        request: Request,
        peer: str,
        admitted: bool,
        timer: _Deadlines,
    ) -> _Outcome:
        """Serve one request, or say it is a stream; say what becomes of the connection."""
        stream = connection.stream
        cors = self.policy.cors.headers(request.headers.get("origin"))
        try:
            route = match(
                request.method,
                request.target,
                max_topics=self.limits.max_topics_per_subscription,
            )
        except ClientError as error:
            if request.method == "OPTIONS":
                await self._preflight(stream, connection, request)
                return _NEXT if request.keep_alive else _CLOSE
            if request.method in ("GET", "HEAD"):
                connection.finish_bodyless(request)
            else:
                request.keep_alive = False
            answer = error_response(error, keep_alive=request.keep_alive, headers=cors)
            await _send_quietly(stream, answer)
            return _NEXT if request.keep_alive else _CLOSE
        if route is None or "h2c" in request.headers.get("upgrade", "").lower():
            return _HANDOFF
        if not admitted:
            await self._refuse_overloaded(stream, route, cors)
            return _CLOSE
        if route.kind in ("sse", "ws"):
            return _Outcome(_After.STREAM, route, cors)
        idle = timer.scope
        timer.body_start = now = self._clock
        timer.received = 0
        self._waiting[idle] = now + self._body_first
        try:
            answer, hold = await self._publish(connection, request, route, cors, peer)
        finally:
            del self._waiting[idle]
        try:
            await connection.send(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return _CLOSE
        if not request.keep_alive:
            return _CLOSE
        return _Outcome(_After.NEXT, hold=hold) if hold else _NEXT

    async def _hand_over(self, stream: trio.SocketStream, other: NotHttp1) -> bool:
        if other.protocol == "h2":
            await self.handoff(stream, other.raw)
            return True
        if self.handoff_tls is None:
            log.info(
                "%s: TLS connection refused: no [tls] certificate is configured",
                _peer_ip(stream.socket),
            )
            return False
        await self.handoff_tls(stream, other.raw)
        return True

    async def _preflight(
        self, stream: trio.SocketStream, connection: HttpConnection, request: Request
    ) -> None:
        connection.finish_bodyless(request)
        headers = self.policy.cors.preflight(request.headers.get("origin"))
        if headers is None:
            answer = response(
                403,
                b'{"error":"origin not allowed","code":"cors_origin"}',
                keep_alive=request.keep_alive,
            )
        else:
            answer = response(204, keep_alive=request.keep_alive, headers=headers)
        await _send_quietly(stream, answer)

    async def _refuse_overloaded(
        self, stream: trio.SocketStream, route: Route, cors: Headers
    ) -> None:
        """Over a connection limit: SSE gets 200, a jittered retry and a notice; others 503."""
        retry_ms = int(self.hub.retry_ms * random.uniform(1.0, 3.0))
        if route.kind == "sse":
            # A store's positions are per subscription; an empty id there keeps none.
            position = self.hub.position if self.hub.store is None else ""
            notice = SseCodec(envelope=route.flag("envelope")).notice(
                "broker.overloaded", position, {"retry_ms": retry_ms}, retry_ms
            )
            head = sse_head(cors)
            await _send_quietly(stream, head + PREAMBLE + notice)
            return
        error = Overloaded("too many connections; retry later", retry_ms / 1000)
        await _send_quietly(stream, error_response(error, keep_alive=False, headers=cors))

    async def _publish(
        self,
        connection: HttpConnection,
        request: Request,
        route: Route,
        cors: Headers,
        peer: str,
    ) -> tuple[bytes, float]:
        """Read, publish and answer one publish request (``keep_alive`` may turn off).

        Returns:
            the answer, and how long to wait before reading the next request (rate limits).
        """
        try:
            try:
                body = await connection.read_body(request, self.limits.max_body_bytes)
            except ClientError:
                request.keep_alive = False  # the body was not read: the framing is lost
                raise
            payload = await publish(self.hub, self.policy, route, request.headers, body, peer)
            keep_alive = request.keep_alive
            return response(202, answer_body(payload), keep_alive=keep_alive, headers=cors), 0.0
        except ConnectionDone:
            request.keep_alive = False
            return b"", 0.0
        except ClientError as error:
            hold = 0.0
            if isinstance(error, TooManyRequests):
                hold = min(error.wait_seconds + 0.005, MAX_RATE_HOLD_SECONDS)
            return error_response(error, keep_alive=request.keep_alive, headers=cors), hold


class _Deadlines:
    """One connection's deadline hooks (called off the hot path, see HttpConnection)."""

    __slots__ = ("body_start", "dataplane", "received", "scope")

    def __init__(self, dataplane: DataPlane, scope: trio.CancelScope) -> None:
        self.dataplane = dataplane
        self.scope = scope
        self.body_start = 0.0
        self.received = 0

    def head_started(self) -> None:
        """A head began to arrive: it has ``head_timeout`` to complete (not ``idle``)."""
        plane = self.dataplane
        limit = plane._clock + plane.limits.head_timeout
        if plane._waiting.get(self.scope, limit) > limit:
            plane._waiting[self.scope] = limit

    def body_bytes(self, count: int) -> None:
        """More of a body came: the deadline moves by what the minimum rate allows for it."""
        plane = self.dataplane
        rate = plane.limits.min_body_rate
        if not rate or self.scope not in plane._waiting:
            return
        self.received += count
        plane._waiting[self.scope] = self.body_start + plane.body_grace + self.received / rate


class RawSseTransport:
    """SSE on the data plane's raw socket (a :class:`~.session.StreamTransport`).

    The response head goes out corked with ``broker.start`` and the replay; the client's
    leaving is seen on the raw descriptor.
    """

    __slots__ = ("answered", "cors", "head_only", "route", "stream")
    kind = "sse"

    def __init__(
        self, stream: trio.SocketStream, route: Route, cors: Headers, *, head_only: bool
    ) -> None:
        self.stream = stream
        self.route = route
        self.cors = cors
        self.head_only = head_only
        #: A response started (the connection's guard then sends no 500).
        self.answered = False

    async def refuse(self, error: ClientError) -> None:
        self.answered = True
        await _send_quietly(self.stream, error_response(error, keep_alive=False, headers=self.cors))

    async def degrade(self, error: Unavailable, resume_from: str | None) -> None:
        self.answered = True
        notice = degraded_notice(self.route, error, resume_from)
        await _send_quietly(self.stream, sse_head(self.cors) + PREAMBLE + notice)

    async def over(self) -> bool:
        # The client has every event of these closed topics: 204 makes an EventSource
        # stop reconnecting for good.
        self.answered = True
        await _send_quietly(self.stream, response(204, keep_alive=False, headers=self.cors))
        return True

    async def accept(self) -> bytes | None:
        self.answered = True  # the head leaves with broker.start (open_stream)
        head = sse_head(self.cors) + PREAMBLE
        if self.head_only:
            await _send_quietly(self.stream, head)
            return None
        return head

    def sink(self) -> Sink:
        return SocketSink(self.stream.socket)

    def codec(self) -> Codec:
        return SseCodec(envelope=self.route.flag("envelope"))

    async def serve(
        self, subscriber: Subscriber, nursery: trio.Nursery, identity: Identity
    ) -> None:
        await _wait_until_closed(self.stream.socket)

    async def finish(self, subscriber: Subscriber) -> None:
        pass


_SAFE_ID: Final = re.compile(r"[A-Za-z0-9._~:-]*")


def answer_body(payload: Answer) -> bytes:
    """A publish answer as JSON; the one-event answer by template.

    The template skips ``json`` (~3.5 µs a publish: the encoder is rebuilt per call). Topics
    are checked to a JSON-safe alphabet; an id is used as is only when it is one too.
    """
    event_id, topic = payload.get("id"), payload.get("topic")
    if len(payload) == 2 and isinstance(event_id, str) and _SAFE_ID.fullmatch(event_id):
        return b'{"id":"%s","topic":"%s"}' % (event_id.encode(), str(topic).encode())
    return _JSON_ENCODER.encode(payload).encode()


_JSON_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def sse_head(cors: Headers) -> bytes:
    """The response head of an SSE stream."""
    if not cors:
        return SSE_HEAD
    extra = "".join(f"{name}: {value}\r\n" for name, value in cors).encode("latin-1")
    return SSE_HEAD[:-2] + extra + b"\r\n"


async def _wait_until_closed(sock: trio.socket.SocketType) -> None:
    """Return when the client closes its side (bytes it sends meanwhile are ignored).

    On the raw descriptor: each idle subscriber waits here, and trio's ``recv`` would keep
    three more frames alive per connection (~0.8 KiB, measured with tracemalloc).
    """
    fd = sock.fileno()
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            continue
        except OSError:
            return
        if not data:
            return


#: What a connection whose handler failed gets, if no response started (core/guard.py).
INTERNAL_ERROR: Final = response(500, INTERNAL_ERROR_BODY, keep_alive=False)


async def _send_quietly(stream: trio.SocketStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


class _ConnectionName:
    """``http host:port``: a connection's id in the guard's log line, made only for it."""

    __slots__ = ("sock",)

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    def __str__(self) -> str:
        try:
            host, port = self.sock.getpeername()[:2]
        except OSError:
            return "http ?"
        return f"http {host}:{port}"


def _peer_address(sock: trio.socket.SocketType) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer_ip(sock: trio.socket.SocketType) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "?"
