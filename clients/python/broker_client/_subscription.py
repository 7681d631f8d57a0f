"""A subscription: one async context manager that keeps a stream alive and yields its events.

Theory of operation: ``async with client.subscribe(...) as events`` opens a nursery owned by the
subscription and starts one task in it, the *runner*. The runner loops over attempts (see
``_plan.py``): connect to a node with a transport, hand every event to the caller through an
unbuffered memory channel, and when the stream ends, wait and reconnect from the last delivered
position. ``__aenter__`` returns once the first stream has started (``broker.start``), so events
published after it are guaranteed to arrive; if no stream starts within ``timeout`` it raises.

Invariants:

- The channel has no buffer: the runner reads nothing more from the network until the caller has
  taken the previous item. A hand-over either reaches the caller or is cancelled because the
  subscription is closing, so the runner records an event as delivered (resume position,
  duplicate filter) just before handing it over, and a reconnect resumes after exactly what the
  caller got. A slow caller pushes back on the broker (which then drops and says so with
  :class:`Dropped`) instead of growing memory here.
- An event whose id was already delivered is never delivered again (``_position.py``).
- Every task (the runner, trio-websocket's reader, the WebSocket pinger) lives in the
  subscription's nursery or in a nursery nested inside the runner. Leaving the ``async with``
  cancels the nursery and waits for all of them, and closes the HTTP client.
- The caller's exceptions never pass through the nursery (it is exited with no exception), so
  they come out of the ``async with`` unwrapped; the runner forwards its own errors through the
  channel, so they come out of the iteration unwrapped too.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal

import httpx
import trio

from ._errors import BrokerError, BrokerTimeout, BrokerUnavailable, ServerError
from ._events import (
    Decoded,
    Dropped,
    Ended,
    Event,
    Notice,
    Reconnecting,
    Reset,
    Started,
    Stopping,
    TransportChanged,
)
from ._plan import Attempt, ConnectionPlan, EndKind, StreamEnd
from ._position import ResumePosition
from ._transports import CLOSE_TIMEOUT_SECONDS, stream_sse, stream_ws

__all__ = ["HEARTBEAT_TIMEOUT_SECONDS", "Subscription"]

logger = logging.getLogger(__name__)

HEARTBEATS_PER_WINDOW: Final = 2.5
"""A stream is dead after this many of the broker's heartbeat periods of silence."""
DEFAULT_HEARTBEAT_SECONDS: Final = 15.0
"""The broker's heartbeat period assumed until its ``broker.start`` announces one."""
HEARTBEAT_TIMEOUT_SECONDS: Final = HEARTBEATS_PER_WINDOW * DEFAULT_HEARTBEAT_SECONDS
USER_AGENT: Final = "broker-client-python"
MIN_ATTEMPT_SECONDS: Final = 0.1
"""Shortest time given to one attempt while opening, even at the open deadline."""


@dataclass(frozen=True, slots=True)
class _Opened:
    """Runner → ``__aenter__``: the first stream has started at ``position``."""

    position: str | None


@dataclass(frozen=True, slots=True)
class _Failure:
    """Runner → caller: the subscription cannot continue."""

    error: Exception


_Item = Event | Notice | _Opened | _Failure


class Subscription:
    """An open stream of events from one or more topics; use ``async with`` and ``async for``.

    Created by :meth:`BrokerClient.subscribe`. Iterating yields :class:`Event` objects and, in the
    same sequence, :class:`Notice` objects (:class:`Reset`, :class:`Dropped`,
    :class:`Reconnecting`, :class:`FailedOver`, :class:`TransportChanged`); filter with
    ``isinstance(item, Event)`` if you only want data.

    Resources: entering opens a nursery, an HTTP client and one connection at a time; leaving
    (normally, by exception or by cancellation) cancels every task, closes the connection and the
    client, and ends the iteration. A subscription is entered once.

    Raises (from ``async with``):
        ClientError: the broker rejected the subscription (bad topic...), on every transport.
        BrokerUnavailable: no node could be reached within ``timeout`` (or they answered 5xx).
        BrokerTimeout: a node was reached but no stream started within ``timeout``.
        ProtocolError: the last node tried answered, but not with the broker protocol (e.g.
            ``text/html`` with ``transport="sse"``).

    Raises (from the iteration):
        ClientError: a later reconnect was rejected with 4xx. Every other failure is retried
            forever with backoff and reported as :class:`Reconnecting`; stop iterating to give up.
    """

    def __init__(
        self,
        urls: Sequence[str],
        topics: Sequence[str],
        *,
        transport: Literal["sse", "ws", "auto"] = "auto",
        last_event_id: str | None = None,
        start_options: Sequence[tuple[str, str]] = (),
        timeout: float,
        heartbeat_timeout: float | None = None,
        backoff: Sequence[float],
        max_backoff: float,
        rng: random.Random | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if transport not in ("sse", "ws", "auto"):
            raise ValueError(f"transport must be 'sse', 'ws' or 'auto', not {transport!r}")
        if not topics:
            raise ValueError("subscribe needs at least one topic")
        self._urls = list(urls)
        self._topics = list(topics)
        self._headers = dict(headers or {"User-Agent": USER_AGENT})
        self._timeout = timeout
        self._fixed_heartbeat_timeout = heartbeat_timeout
        self._broker_heartbeat = DEFAULT_HEARTBEAT_SECONDS
        self._start_options = tuple(start_options)
        self._ended: set[str] = set()
        self._start_position: str | None = None
        self._plan = ConnectionPlan(
            self._urls, transport, backoff=backoff, max_backoff=max_backoff, rng=rng
        )
        self._position = ResumePosition(last_event_id or None)
        self._caller_position = last_event_id or None
        self._send, self._receive = trio.open_memory_channel[_Item](0)
        self._early: deque[Event | Notice] = deque()
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._entered = False
        self._opened = False
        self._attempt = Attempt(self._urls[0], self._plan.transport)
        self._started = False
        self._http: httpx.AsyncClient | None = None
        self._connected: Attempt | None = None

    def __str__(self) -> str:
        return f"subscription[{','.join(self._topics)}]"

    @property
    def last_event_id(self) -> str | None:
        """The position after the last item received from this subscription.

        Persist it and pass it as ``last_event_id`` to resume in a later run: it is the id of
        the last :class:`Event` received, or the position of a later :class:`Reset` or
        :class:`Dropped` notice, or the start position when nothing was received yet.
        """
        return self._caller_position

    @property
    def transport(self) -> str | None:
        """``"sse"`` or ``"ws"``: the transport of the current (or last) stream."""
        return self._connected.transport if self._connected else None

    @property
    def url(self) -> str | None:
        """The node of the current (or last) stream."""
        return self._connected.url if self._connected else None

    async def __aenter__(self) -> Subscription:
        if self._entered:
            raise RuntimeError("a Subscription can be entered only once")
        self._entered = True
        self._http = httpx.AsyncClient(headers=self._headers)
        self._nursery_manager = trio.open_nursery()
        nursery = self._nursery = await self._nursery_manager.__aenter__()
        try:
            nursery.start_soon(self._run_task)
            while True:
                item = await self._receive.receive()
                if isinstance(item, _Opened):
                    self._caller_position = item.position
                    return self
                if isinstance(item, _Failure):
                    raise item.error
                self._early.append(item)
        except BaseException:
            await self._close()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        assert self._nursery is not None
        assert self._nursery_manager is not None
        self._nursery.cancel_scope.cancel()
        try:
            # The caller's exception, if any, is deliberately not passed in: the nursery only
            # ever holds the runner, whose errors travel through the channel.
            await self._nursery_manager.__aexit__(None, None, None)
        finally:
            self._receive.close()
            if self._http is not None:
                with trio.move_on_after(CLOSE_TIMEOUT_SECONDS, shield=True):
                    await self._http.aclose()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Notice:
        try:
            return await self.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def receive(self) -> Event | Notice:
        """Wait for the next event or notice.

        Returns:
            An :class:`Event` or a :class:`Notice`.

        Raises:
            ClientError: a reconnect was rejected with 4xx (raised once, then EndOfChannel).
            trio.EndOfChannel: the subscription failed earlier and has nothing more.
            trio.ClosedResourceError: called after leaving the ``async with``.
            RuntimeError: called before entering it.
        """
        if not self._entered:
            raise RuntimeError("enter the subscription with `async with` before iterating it")
        if self._early:
            item: _Item = self._early.popleft()
        else:
            item = await self._receive.receive()
        if isinstance(item, _Failure):
            raise item.error
        assert not isinstance(item, _Opened)
        if isinstance(item, Event):
            self._caller_position = item.id
        elif isinstance(item, Reset):
            self._caller_position = item.position
        elif isinstance(item, Dropped):
            self._caller_position = item.resume_from
        return item

    # --- the runner -------------------------------------------------------------------------

    async def _run_task(self) -> None:
        async with self._send:
            try:
                await self._connect_loop()
            except Exception as exc:  # forwarded to the caller, not swallowed
                await self._send.send(_Failure(exc))

    async def _connect_loop(self) -> None:
        open_deadline = trio.current_time() + self._timeout
        last_error: BrokerError | None = None
        while True:
            attempt = self._plan.next_attempt()
            self._attempt = attempt
            self._started = False
            self._start_position = None
            logger.debug("%s: connecting to %s over %s", self, attempt.url, attempt.transport)
            if self._opened:
                end = await self._stream(attempt, self._timeout)
            else:
                # Every attempt bounds itself (connect, headers and broker.start within its
                # timeout), so opening gives each attempt what is left of the open deadline
                # and the attempt's own outcome still drives the fallback decision.
                remaining = open_deadline - trio.current_time()
                end = await self._stream(attempt, max(remaining, MIN_ATTEMPT_SECONDS))
            if end.kind is EndKind.ENDED or self._ended.issuperset(self._topics):
                logger.info("%s: every topic has ended", self)
                if not self._opened:
                    self._opened = True
                    await self._send.send(_Opened(self._position.last_event_id))
                return
            started = self._started
            decision = self._plan.on_end(attempt, end, started=started)
            if decision.fatal is not None:
                raise decision.fatal
            last_error = end.error or last_error
            logger.info(
                "%s: stream from %s ended (%s): %s", self, attempt.url, end.kind.value, end.error
            )
            for notice in decision.notices:
                if isinstance(notice, TransportChanged) and not self._opened:
                    # Falling back is progress, not failure: the new transport gets its own
                    # ``timeout`` to start.
                    open_deadline = trio.current_time() + self._timeout
                if self._opened or not isinstance(notice, Reconnecting):
                    await self._send.send(notice)
            if not self._opened and trio.current_time() + decision.delay >= open_deadline:
                raise self._open_failure(last_error)
            if decision.delay > 0:
                await trio.sleep(decision.delay)

    async def _stream(self, attempt: Attempt, timeout: float) -> StreamEnd:
        if attempt.transport == "sse":
            assert self._http is not None
            return await stream_sse(
                self._http,
                attempt.url,
                topics=self._topics,
                last_event_id=self._position.last_event_id,
                timeout=timeout,
                sink=self,
                start_options=self._start_options,
            )
        return await stream_ws(
            attempt.url,
            topics=self._topics,
            last_event_id=self._position.last_event_id,
            timeout=timeout,
            sink=self,
            start_options=self._start_options,
            headers=self._headers,
        )

    def _open_failure(self, last_error: BrokerError | None) -> BrokerError:
        where = ", ".join(self._urls)
        error: BrokerError
        if last_error is None or isinstance(last_error, BrokerTimeout):
            error = BrokerTimeout(f"no stream started within {self._timeout} s ({where})")
        elif isinstance(last_error, BrokerUnavailable | ServerError):
            error = BrokerUnavailable(f"no broker reachable within {self._timeout} s ({where})")
        else:
            error = last_error
        if error is not last_error:
            error.__cause__ = last_error
        return error

    # --- the Sink protocol, called by the transports ------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the current attempt's stream has started."""
        return self._started

    @property
    def heartbeat_timeout(self) -> float:
        """The silence after which a started stream is dead (seconds).

        The caller's ``heartbeat_timeout`` if given, else 2.5 times the heartbeat period the
        broker announced in ``broker.start`` (15 s until one does).
        """
        if self._fixed_heartbeat_timeout is not None:
            return self._fixed_heartbeat_timeout
        return HEARTBEATS_PER_WINDOW * self._broker_heartbeat

    async def handle(self, item: Decoded) -> StreamEnd | None:
        """Take one decoded message of the current attempt (see ``_transports.Sink``)."""
        if isinstance(item, Event):
            await self._mark_started()
            # Retained and final events come re-stamped with the stream's start position, so
            # several may share it; the broker sends them only to a client that lacks them.
            if item.id != self._start_position and self._position.is_duplicate(item.id):
                logger.debug("%s: skipping duplicate %s", self, item.id)
                return None
            # Recorded before the hand-over: a send on this unbuffered channel either reaches
            # the caller or is cancelled because the subscription is closing.
            self._position.delivered(item.id)
            await self._send.send(item)
        elif isinstance(item, Started):
            if item.heartbeat_seconds:
                self._broker_heartbeat = item.heartbeat_seconds
            self._start_position = item.position
            self._position.moved(item.position)
            await self._mark_started()
        elif isinstance(item, Reset):
            self._start_position = item.position
            self._position.moved(item.position)
            await self._mark_started()
            await self._send.send(item)
        elif isinstance(item, Dropped):
            self._position.moved(item.resume_from)
            await self._mark_started()
            await self._send.send(item)
        elif isinstance(item, Ended) and item.topic not in self._ended:
            await self._send.send(item)
            self._ended.add(item.topic)
            if self._ended.issuperset(self._topics):
                return StreamEnd(EndKind.ENDED)
        elif isinstance(item, Stopping):
            return StreamEnd(EndKind.SHUTDOWN, retry_ms=item.retry_ms)
        return None

    async def _mark_started(self) -> None:
        if self._started:
            return
        self._started = True
        attempt = self._connected = self._attempt
        notices = self._plan.on_started(attempt)
        logger.info("%s: streaming from %s over %s", self, attempt.url, attempt.transport)
        if not self._opened:
            self._opened = True
            await self._send.send(_Opened(self._position.last_event_id))
        for notice in notices:
            await self._send.send(notice)
