"""Fault isolation: an unexpected exception ends one connection, never the process.

Every per-connection task (a data-plane HTTP connection, an SSE or WebSocket stream, a
connection handed to hypercorn, a peer link, a Redis follower's read) runs its body under
:func:`guard`. An exception that escapes the body is a bug (every error a stranger can
cause is a ``ClientError`` or a link error and is handled where it happens), so the guard:

* logs one line with the connection's name, where it happened and the traceback;
* counts it in :class:`Faults` (``broker_internal_errors_total{where=…}`` on ``/metrics``,
  ``internal_errors`` in ``/stats``);
* suppresses it, so the caller can answer for that connection alone: a ``500`` JSON
  ``{"error","code":"internal_error"}`` when no response started (``Fault.answered``),
  a WebSocket close ``1011``, a closed peer link. The process and every other client go on.

What it never touches: ``trio.Cancelled``, ``KeyboardInterrupt``, ``SystemExit`` and other
``BaseException`` that are not ``Exception``. Exception groups are split with ``except*``:
the ``Exception`` leaves are the fault, anything else is raised again (as a group), so
cancellation still unwinds and ``strict_exception_groups`` holds.

Layer: core (sans-IO, no trio): it only sorts exceptions, logs and counts; the caller does
the bounded, shielded last write in its own layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Final

log = logging.getLogger(__name__)

#: Where a fault can happen: the label of ``broker_internal_errors_total``.
WHERES: Final = ("http", "sse", "ws", "handoff", "peer", "redis")

#: The answer to a request whose handler failed before it answered (status 500).
INTERNAL_ERROR_BODY: Final = b'{"error":"internal error","code":"internal_error"}'


class Faults:
    """Internal errors counted by where they happened (one per server, on its hub).

    Attributes:
        counts: ``where`` -> number of faults contained there (every key of :data:`WHERES`).
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(WHERES, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def statistics(self) -> dict[str, int]:
        """A copy of the counts (``/stats``)."""
        return dict(self.counts)


@dataclass(slots=True)
class Fault:
    """What one guarded block is doing, and what it caught.

    The body may update ``where`` as the connection changes hands (an HTTP connection that
    becomes an SSE stream) and set ``answered`` once its response (or WebSocket accept) has
    started, so the caller knows whether a ``500`` may still be sent.

    Attributes:
        where: one of :data:`WHERES`.
        name: the connection's name for the log line (``ws 10.0.0.7:51234``, ``peer n2``);
            any object, formatted with ``str`` only when a fault is logged.
        answered: a response started on this connection.
        error: the exception (or group) contained, ``None`` if the block ended normally.
    """

    where: str
    name: object
    answered: bool = False
    error: BaseException | None = None

    def __bool__(self) -> bool:
        return self.error is not None


def guard(faults: Faults, where: str, name: object) -> Guard:
    """Contain an unexpected exception of one connection's task (see module docstring).

    Use as ``with guard(hub.faults, "ws", name) as fault: ...``, then, after the block,
    ``if fault:`` answer that connection (500, close 1011, close the link).

    Args:
        faults: the server's counters.
        where: one of :data:`WHERES` (the block may change ``fault.where`` later).
        name: the connection's name for the log line (``str`` is called only then).

    Raises:
        BaseException: anything that is not an ``Exception`` (``trio.Cancelled``,
            ``KeyboardInterrupt``) passes through; from a mixed group, the group of the
            leaves that are not ``Exception``.
    """
    if where not in faults.counts:
        raise ValueError(f"unknown fault site {where!r}")
    return Guard(faults, Fault(where, name))


class Guard:
    """The context manager :func:`guard` returns.

    A class with slots rather than a ``@contextmanager`` generator: every open connection
    holds its guard for its whole life, and the generator's frame and wrapper cost 871 bytes
    per idle stream against 130 here (tracemalloc, 2 000 idle SSE streams).
    """

    __slots__ = ("fault", "faults")

    def __init__(self, faults: Faults, fault: Fault) -> None:
        self.faults = faults
        self.fault = fault

    def __enter__(self) -> Fault:
        return self.fault

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc is None:
            return False
        if isinstance(exc, BaseExceptionGroup):
            # What `except* Exception` does: the Exception leaves are the fault; the rest
            # (Cancelled, KeyboardInterrupt) is raised again as a group.
            matched, rest = exc.split(Exception)
            if matched is not None:
                leaves = matched.exceptions
                self._contain(leaves[0] if len(leaves) == 1 else matched)
            if rest is not None:
                raise rest
            return True
        if isinstance(exc, Exception):
            self._contain(exc)
            return True
        return False

    def _contain(self, error: BaseException) -> None:
        fault = self.fault
        fault.error = error
        faults = self.faults
        faults.counts[fault.where] = faults.counts.get(fault.where, 0) + 1
        log.error(
            "%s: internal error (%s), this connection alone is closed: %r",
            str(fault.name),  # now: a handler may format the record after the socket closed
            fault.where,
            error,
            exc_info=error,
        )
