"""The public port's accept loop: accept, hand each connection to its handler, survive EMFILE.

Why not ``trio.serve_listeners``: when the process is out of descriptors it sleeps 0.1 s per
failed ``accept`` and logs every failure with a traceback (ten a second for as long as the
table is full), and it cannot make room. A flood of clients that open sockets and never finish
a request head (slowloris) fills the table; the good client then waits in the kernel's
backlog behind them until they time out. This loop, on a failed accept:

* EMFILE/ENFILE: asks ``make_room`` (the data plane closes the connections that have waited
  longest for a request head) and accepts again at once if it closed any, so a client queued
  behind the flood is accepted within milliseconds instead of after a head timeout;
* otherwise (nothing to close, or ENOBUFS/ENOMEM): sleeps, 0.1 s doubling to 1 s, and never
  spins;
* logs once per episode: a warning at its first failure, a summary at the first accept
  ``EPISODE_QUIET_SECONDS`` after its last failure; every failure is counted
  (:meth:`Acceptor.statistics`, ``/metrics``).

Any other ``accept`` error ends the loop (and the server) as it did with trio's.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

log = logging.getLogger(__name__)

#: ``accept`` errors that mean "out of resources for now", not "this listener is broken".
CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Of those, the ones that closing some of our own connections can cure.
DESCRIPTOR_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE})
BACKOFF_FIRST_SECONDS: Final = 0.1
BACKOFF_MAX_SECONDS: Final = 1.0
#: A failure this long after the previous one starts a new episode (and a new log line).
EPISODE_QUIET_SECONDS: Final = 10.0

Handler = Callable[[trio.SocketStream], Awaitable[None]]
#: Closes some connections to free descriptors; returns how many it closed (0: none to close).
MakeRoom = Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class AcceptStatistics:
    """What the accept loop has done so far.

    Attributes:
        accepted: connections accepted.
        failures: ``accept`` calls that failed for lack of resources.
        episodes: runs of such failures (each logged once).
        backoffs: sleeps after a failure (nothing could be closed to make room).
        made_room: connections closed to free a descriptor for a new one.
    """

    accepted: int
    failures: int
    episodes: int
    backoffs: int
    made_room: int


class Acceptor:
    """Accepts connections on listeners and runs ``handler`` for each in ``handler_nursery``.

    Args:
        handler: serves one connection; it owns the stream and closes it.
        make_room: called when the descriptor table is full (see module docstring).
    """

    def __init__(self, handler: Handler, *, make_room: MakeRoom | None = None) -> None:
        self.handler = handler
        self.make_room = make_room
        self._accepted = 0
        self._failures = 0
        self._episodes = 0
        self._backoffs = 0
        self._made_room = 0
        self._episode_failures = 0
        self._episode_started = 0.0
        self._last_failure = -float("inf")

    def statistics(self) -> AcceptStatistics:
        return AcceptStatistics(
            accepted=self._accepted,
            failures=self._failures,
            episodes=self._episodes,
            backoffs=self._backoffs,
            made_room=self._made_room,
        )

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        handler_nursery: trio.Nursery,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on every listener until cancelled; report the listeners once accepting.

        Each listener is closed when this returns. Handlers run in ``handler_nursery``, which
        the caller owns (and cancels at shutdown).
        """
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_task, listener, handler_nursery)
            task_status.started(listeners)

    async def _accept_task(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        delay = BACKOFF_FIRST_SECONDS
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in CAPACITY_ERRNOS:
                        raise
                    self._failed(exc)
                    if exc.errno in DESCRIPTOR_ERRNOS and self.make_room is not None:
                        closed = await self.make_room()
                        if closed:
                            self._made_room += closed
                            continue
                    self._backoffs += 1
                    await trio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_SECONDS)
                    continue
                delay = BACKOFF_FIRST_SECONDS
                self._accepted += 1
                if self._episode_failures:
                    self._maybe_end_episode()
                nursery.start_soon(self.handler, stream)

    def _failed(self, exc: OSError) -> None:
        now = trio.current_time()
        self._failures += 1
        if now - self._last_failure > EPISODE_QUIET_SECONDS or not self._episode_failures:
            self._episodes += 1
            self._episode_failures = 0
            self._episode_started = now
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            log.warning(
                "accept failed: %s (%s); %s; logged once until it stops for %.0f s",
                name,
                os.strerror(exc.errno or 0),
                "closing connections that wait longest for a request head, then backing off"
                if exc.errno in DESCRIPTOR_ERRNOS and self.make_room is not None
                else "backing off",
                EPISODE_QUIET_SECONDS,
            )
        self._episode_failures += 1
        self._last_failure = now

    def _maybe_end_episode(self) -> None:
        now = trio.current_time()
        if now - self._last_failure < EPISODE_QUIET_SECONDS:
            return
        log.info(
            "accept works again: %d failures over %.1f s",
            self._episode_failures,
            self._last_failure - self._episode_started,
        )
        self._episode_failures = 0
