"""One attempt at a stream, over SSE (httpx) or WebSocket (trio-websocket).

Theory of operation: :func:`stream_sse` and :func:`stream_ws` open one connection to one node,
hand every decoded message to the :class:`Sink` (the subscription), and return a
:class:`~._plan.StreamEnd` saying how the attempt ended. They never raise for network trouble or
bad answers: every such outcome is a ``StreamEnd``, so the subscription decides in one place
(:class:`~._plan.ConnectionPlan`). They raise only ``trio.Cancelled`` (the subscription is
closing) and whatever the sink raises.

Liveness: before ``broker.start`` an attempt has ``timeout`` seconds in all (connect, headers and
the first event). After it, a read that gets nothing for ``sink.heartbeat_timeout`` seconds ends
the attempt as STALLED (the sink derives it from the broker's announced heartbeat unless the
caller fixed it). The broker sends an SSE comment every ``heartbeat_seconds`` of silence; over
WebSocket the client sends a ping after ``heartbeat_timeout / 2.5`` seconds of silence and a pong
counts as traffic. Time spent handing an event to a slow caller is not silence: the window
restarts at every read.

Cleanup: every connection is closed before the function returns, in a bounded shielded scope, so
cancellation never leaves a socket or a reader task behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Final, Protocol, cast
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import msgpack
import trio
import trio_websocket

from ._errors import BrokerTimeout, BrokerUnavailable, ProtocolError, error_from_response
from ._events import Decoded, decode_message, decode_sse
from ._plan import EndKind, StreamEnd
from ._sse import SSEParser

__all__ = ["CLOSE_TIMEOUT_SECONDS", "Sink", "stream_sse", "stream_ws"]

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_SECONDS: Final = 2.0
"""Bound on closing one connection (WebSocket close handshake, HTTP response close)."""
MAX_ERROR_BODY_BYTES: Final = 64 * 1024
MAX_WS_MESSAGE_BYTES: Final = 16 * 1024 * 1024
PINGS_PER_HEARTBEAT_WINDOW: Final = 2.5


class Sink(Protocol):
    """What a transport hands its messages to (implemented by the subscription)."""

    @property
    def started(self) -> bool:
        """Whether this attempt's stream has started (``broker.start`` handled)."""
        ...

    @property
    def heartbeat_timeout(self) -> float:
        """Silence (seconds) after which a started stream is dead; may change at start."""
        ...

    async def handle(self, item: Decoded) -> StreamEnd | None:
        """Deliver one message; a ``StreamEnd`` return ends the attempt (e.g. shutdown)."""
        ...


def _query(topics: list[str], last_event_id: str | None, *extra: tuple[str, str]) -> str:
    pairs = [("topic", topic) for topic in topics]
    if last_event_id:
        pairs.append(("last_event_id", last_event_id))
        extra = tuple(p for p in extra if p[0] not in ("last", "since"))
    pairs.extend(extra)
    return urlencode(pairs)


async def stream_sse(
    http: httpx.AsyncClient,
    url: str,
    *,
    topics: list[str],
    last_event_id: str | None,
    timeout: float,
    sink: Sink,
    start_options: Sequence[tuple[str, str]] = (),
) -> StreamEnd:
    """Run one SSE attempt: ``GET {url}/events?topic=...&envelope=1[&last_event_id=...]``.

    Args:
        http: the subscription's HTTP client.
        url: the node's base URL.
        topics: the topics to follow.
        last_event_id: where to resume, or ``None``.
        timeout: seconds allowed for connect, headers and ``broker.start`` together.
        sink: receives every decoded message (and says how long silence may last).
        start_options: ``last``/``since`` query parameters (sent only without an id).

    Returns:
        How the attempt ended.
    """
    open_deadline = trio.current_time() + timeout
    query = _query(topics, last_event_id, ("envelope", "1"), *start_options)
    request = http.build_request(
        "GET",
        f"{url}/events?{query}",
        headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
        timeout=httpx.Timeout(timeout, read=None),
    )
    response: httpx.Response | None = None
    try:
        with trio.move_on_at(open_deadline):
            response = await http.send(request, stream=True)
    except httpx.TransportError as exc:
        return StreamEnd(EndKind.REFUSED, BrokerUnavailable(f"{url}: {_describe(exc)}"))
    if response is None:
        return StreamEnd(
            EndKind.NO_START, BrokerTimeout(f"{url}: no answer to the SSE request in {timeout} s")
        )
    try:
        if response.status_code == 204:
            # The broker's way of saying "every topic is closed and you have it all".
            return StreamEnd(EndKind.ENDED)
        if response.status_code != 200:
            body = await _read_limited(response, open_deadline)
            return StreamEnd(EndKind.REJECTED, error_from_response(response.status_code, body))
        content_type = response.headers.get("content-type", "")
        if content_type.partition(";")[0].strip().lower() != "text/event-stream":
            return StreamEnd(
                EndKind.REJECTED,
                ProtocolError(f"{url}: SSE answered with Content-Type {content_type!r}"),
            )
        return await _read_sse(response, url, open_deadline, sink)
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT_SECONDS, shield=True):
            await response.aclose()


async def _read_sse(
    response: httpx.Response,
    url: str,
    open_deadline: float,
    sink: Sink,
) -> StreamEnd:
    parser = SSEParser()
    try:
        async with aclosing(_raw_chunks(response)) as chunks:
            while True:
                if sink.started:
                    deadline = trio.current_time() + sink.heartbeat_timeout
                else:
                    deadline = open_deadline
                chunk: bytes | None = None
                with trio.move_on_at(deadline):
                    chunk = await anext(chunks, b"")
                if chunk is None:
                    if sink.started:
                        return StreamEnd(
                            EndKind.STALLED,
                            BrokerTimeout(f"{url}: SSE silent for {sink.heartbeat_timeout} s"),
                        )
                    return StreamEnd(EndKind.NO_START, BrokerTimeout(f"{url}: no broker.start"))
                if not chunk:
                    kind = EndKind.BROKEN if sink.started else EndKind.NO_START
                    return StreamEnd(kind, BrokerUnavailable(f"{url}: the SSE stream ended"))
                for sse in parser.feed(chunk):
                    end = await sink.handle(decode_sse(sse))
                    if end is not None:
                        return end
    except httpx.TransportError as exc:
        kind = EndKind.BROKEN if sink.started else EndKind.REFUSED
        return StreamEnd(kind, BrokerUnavailable(f"{url}: SSE stream broke: {_describe(exc)}"))
    except ProtocolError as exc:
        return StreamEnd(EndKind.BROKEN if sink.started else EndKind.REJECTED, exc)


async def _read_limited(response: httpx.Response, deadline: float) -> bytes:
    body = bytearray()
    with trio.move_on_at(deadline):
        try:
            async with aclosing(_raw_chunks(response)) as chunks:
                async for chunk in chunks:
                    body += chunk
                    if len(body) >= MAX_ERROR_BODY_BYTES:
                        break
        except httpx.TransportError:
            pass  # the status is what matters; the body is only the error's detail
    return bytes(body[:MAX_ERROR_BODY_BYTES])


def _raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    # httpx types it as an AsyncIterator, but it is an async generator: closing it explicitly
    # (rather than leaving it to the garbage collector) keeps its cleanup in this task.
    return cast("AsyncGenerator[bytes, None]", response.aiter_raw())


def ws_url(
    url: str,
    topics: list[str],
    last_event_id: str | None,
    start_options: Sequence[tuple[str, str]] = (),
) -> str:
    """The WebSocket URL for ``url`` (http → ws, https → wss) and the topics."""
    parts = urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    query = _query(topics, last_event_id, *start_options)
    return urlunsplit((scheme, parts.netloc, path, query, ""))


async def stream_ws(
    url: str,
    *,
    topics: list[str],
    last_event_id: str | None,
    timeout: float,
    sink: Sink,
    start_options: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> StreamEnd:
    """Run one WebSocket attempt: ``GET {url}/ws?topic=...[&last_event_id=...]`` (JSON frames).

    Args:
        url: the node's base URL (``http``/``https``).
        topics: the topics to follow.
        last_event_id: where to resume, or ``None``.
        timeout: seconds allowed for connect, handshake and ``broker.start`` together.
        sink: receives every decoded message (and says how long silence may last).
        start_options: ``last``/``since`` query parameters (sent only without an id).
        headers: sent with the handshake (``Authorization``); ``User-Agent`` is not.

    Returns:
        How the attempt ended.
    """
    extra = [
        (name.encode(), value.encode())
        for name, value in (headers or {}).items()
        if name.lower() != "user-agent"  # trio-websocket sends its own
    ]
    open_deadline = trio.current_time() + timeout
    end: StreamEnd | None = None
    try:
        with trio.CancelScope() as abort:
            async with trio_websocket.open_websocket_url(
                ws_url(url, topics, last_event_id, start_options),
                connect_timeout=timeout,
                disconnect_timeout=CLOSE_TIMEOUT_SECONDS,
                max_message_size=MAX_WS_MESSAGE_BYTES,
                extra_headers=extra,
            ) as ws:
                end = await _read_ws(ws, url, open_deadline, sink)
                if end.kind in (EndKind.STALLED, EndKind.NO_START):
                    # Nobody is listening: skip the close handshake, just drop the socket.
                    abort.cancel()
    except trio_websocket.ConnectionRejected as exc:
        if exc.status_code == 204:
            return StreamEnd(EndKind.ENDED)
        return StreamEnd(EndKind.REJECTED, error_from_response(exc.status_code, exc.body))
    except trio_websocket.ConnectionTimeout:
        return StreamEnd(
            EndKind.REFUSED, BrokerTimeout(f"{url}: WebSocket handshake took over {timeout} s")
        )
    except trio_websocket.DisconnectionTimeout:
        pass  # the stream had already ended; `end` says how
    except trio_websocket.HandshakeError as exc:
        cause = exc.__cause__ or exc
        return StreamEnd(EndKind.REFUSED, BrokerUnavailable(f"{url}: {_describe(cause)}"))
    if end is None:
        return StreamEnd(EndKind.BROKEN, BrokerUnavailable(f"{url}: WebSocket closed"))
    return end


class _Watchdog:
    """Tracks WebSocket traffic: the current read's deadline moves with every sign of life."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.last_traffic = trio.current_time()
        self.read_scope: trio.CancelScope | None = None

    def touch(self) -> None:
        self.last_traffic = trio.current_time()
        if self.read_scope is not None:
            self.read_scope.deadline = self.last_traffic + self.window


async def _read_ws(
    ws: trio_websocket.WebSocketConnection,
    url: str,
    open_deadline: float,
    sink: Sink,
) -> StreamEnd:
    watchdog = _Watchdog(sink.heartbeat_timeout)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_ws_ping_task, ws, watchdog)
        end = await _ws_receive_loop(ws, url, open_deadline, watchdog, sink)
        nursery.cancel_scope.cancel()
    return end


async def _ws_receive_loop(
    ws: trio_websocket.WebSocketConnection,
    url: str,
    open_deadline: float,
    watchdog: _Watchdog,
    sink: Sink,
) -> StreamEnd:
    while True:
        watchdog.window = sink.heartbeat_timeout
        watchdog.touch()
        started = sink.started
        deadline = watchdog.last_traffic + watchdog.window if started else open_deadline
        message: str | bytes | None = None
        with trio.CancelScope(deadline=deadline) as scope:
            watchdog.read_scope = scope if started else None
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                kind = EndKind.BROKEN if started else EndKind.REFUSED
                return StreamEnd(kind, BrokerUnavailable(f"{url}: WebSocket closed ({exc.reason})"))
            finally:
                watchdog.read_scope = None
        if message is None:
            if started:
                return StreamEnd(
                    EndKind.STALLED,
                    BrokerTimeout(f"{url}: WebSocket silent for {watchdog.window} s"),
                )
            return StreamEnd(EndKind.NO_START, BrokerTimeout(f"{url}: no broker.start"))
        try:
            item = decode_message(_decode_frame(message))
        except ProtocolError as exc:
            return StreamEnd(EndKind.BROKEN if started else EndKind.REJECTED, exc)
        end = await sink.handle(item)
        if end is not None:
            return end


async def _ws_ping_task(ws: trio_websocket.WebSocketConnection, watchdog: _Watchdog) -> None:
    while True:
        interval = watchdog.window / PINGS_PER_HEARTBEAT_WINDOW
        await trio.sleep_until(watchdog.last_traffic + interval)
        if trio.current_time() < watchdog.last_traffic + interval:
            continue
        try:
            await ws.ping()
        except trio_websocket.ConnectionClosed:
            return
        watchdog.touch()


def _decode_frame(message: str | bytes) -> Any:
    try:
        if isinstance(message, str):
            return json.loads(message)
        return msgpack.unpackb(message, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"undecodable WebSocket frame: {message[:200]!r}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
