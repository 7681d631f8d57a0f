"""Which node, which transport and how long to wait before the next attempt (sans-IO).

Theory of operation: a subscription is a loop of *attempts*. Each attempt connects to one node
with one transport and ends with a :class:`StreamEnd` saying how. :class:`ConnectionPlan` turns
that into a :class:`Decision`: wait this long, tell the caller these notices, or give up.

The rules (the README's "Reconnects, failover and the SSE → WebSocket fallback" states the same):

- Nodes are tried round-robin: every attempt that fails, and every stream that ends, moves on to
  the next URL of the list. A single-URL client simply retries the same node.
- Consecutive failures back off 1, 2, 5, 15 s (then doubling), capped at ``max_backoff``, each
  ±10 % jitter. The count restarts when a stream starts (``broker.start``).
- ``broker.shutdown`` waits the broker's ``retry_ms`` (±10 %) instead.
- 4xx on the last transport available is final (:class:`ClientError` is raised to the caller).
- ENDED (every topic closed by a final event) is final too: the subscription stops, it is not a
  failure (the runner handles it before asking the plan).
- ``transport="auto"`` starts with SSE and switches to WebSocket for the rest of the subscription
  when SSE *cannot be opened* on a node that answers: a non-200 status, a 200 that is not
  ``text/event-stream``, no ``broker.start`` within ``timeout`` (headers included), or two SSE
  streams in a row that went silent past the heartbeat window. The switch retries at once on the
  same node. A refused or broken connection is a node failure, never a reason to switch.

Time is not read here: delays are returned and the caller sleeps.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from ._errors import BrokerError, ClientError
from ._events import FailedOver, Notice, Reconnecting, TransportChanged

__all__ = [
    "BACKOFF_SECONDS",
    "JITTER",
    "MAX_BACKOFF_SECONDS",
    "Attempt",
    "ConnectionPlan",
    "Decision",
    "EndKind",
    "StreamEnd",
    "TransportName",
    "backoff_delay",
]

TransportName = Literal["sse", "ws"]

BACKOFF_SECONDS: Final = (1.0, 2.0, 5.0, 15.0)
"""Delay before the 1st, 2nd, 3rd, 4th consecutive retry; later ones double the last."""
MAX_BACKOFF_SECONDS: Final = 15.0
"""Default cap on one backoff delay."""
JITTER: Final = 0.1
"""Relative jitter applied to every delay (±10 %)."""
SSE_STALLS_BEFORE_SWITCH: Final = 2


def backoff_delay(
    failures: int,
    *,
    schedule: Sequence[float] = BACKOFF_SECONDS,
    max_backoff: float = MAX_BACKOFF_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """The jittered delay before the retry that follows ``failures`` consecutive failures.

    Args:
        failures: consecutive failures so far (>= 1).
        schedule: base delays for the first retries; later retries double the last entry.
        max_backoff: cap on the base delay (seconds), applied before jitter.
        rng: the random source for the jitter (a module-level one when ``None``).

    Returns:
        Seconds to wait: the base delay times a uniform factor in [0.9, 1.1].
    """
    index = max(failures, 1) - 1
    if index < len(schedule):
        base = schedule[index]
    else:
        base = schedule[-1] * 2.0 ** (index - len(schedule) + 1)
    return _jitter(min(base, max_backoff), rng)


def _jitter(seconds: float, rng: random.Random | None) -> float:
    factor = (rng or random).uniform(1.0 - JITTER, 1.0 + JITTER)
    return seconds * factor


class EndKind(enum.Enum):
    """How an attempt ended."""

    REFUSED = "refused"
    """No connection (refused, unresolvable, connect timeout): a node failure."""
    REJECTED = "rejected"
    """Connected, but the answer was not a stream: non-200 status or wrong content type."""
    NO_START = "no_start"
    """Connected, but no ``broker.start`` (or no headers) within the open timeout."""
    STALLED = "stalled"
    """The stream started, then nothing arrived within the heartbeat window."""
    BROKEN = "broken"
    """The stream started, then broke or was closed without ``broker.shutdown``."""
    SHUTDOWN = "shutdown"
    """The broker sent ``broker.shutdown``."""
    ENDED = "ended"
    """Every topic is closed (``broker.end`` for each, or ``204 No Content``): stop for good."""


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The outcome of one attempt.

    Attributes:
        kind: how it ended.
        error: the error behind it (``None`` for SHUTDOWN).
        retry_ms: the broker's ``retry_ms`` for SHUTDOWN.
    """

    kind: EndKind
    error: BrokerError | None = None
    retry_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """The next connection to make."""

    url: str
    transport: TransportName


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an attempt.

    Attributes:
        delay: seconds to wait before the next attempt.
        notices: what to tell the caller, in order.
        fatal: raise this to the caller and stop.
    """

    delay: float = 0.0
    notices: list[Notice] = field(default_factory=list)
    fatal: BrokerError | None = None


class ConnectionPlan:
    """Round-robin over nodes, backoff, and the SSE → WebSocket fallback.

    Args:
        urls: base URLs of the nodes, in order of preference.
        transport: ``"sse"``, ``"ws"`` or ``"auto"``.
        backoff: base delays of the first retries (see :func:`backoff_delay`).
        max_backoff: cap on one delay.
        rng: random source for jitter.
    """

    def __init__(
        self,
        urls: Sequence[str],
        transport: Literal["sse", "ws", "auto"],
        *,
        backoff: Sequence[float] = BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one URL is required")
        self._urls = list(urls)
        self._index = 0
        self._auto = transport == "auto"
        self.transport: TransportName = "ws" if transport == "ws" else "sse"
        self._backoff = tuple(backoff)
        self._max_backoff = max_backoff
        self._rng = rng
        self.failures = 0
        self._sse_stalls = 0
        self._started_url: str | None = None

    @property
    def url(self) -> str:
        """The node the next attempt goes to."""
        return self._urls[self._index]

    def next_attempt(self) -> Attempt:
        """The connection to make now."""
        return Attempt(self.url, self.transport)

    def on_started(self, attempt: Attempt) -> list[Notice]:
        """Record that ``attempt``'s stream started; returns the notices to deliver first."""
        self.failures = 0
        notices: list[Notice] = []
        if self._started_url is not None and attempt.url != self._started_url:
            notices.append(FailedOver(attempt.url))
        self._started_url = attempt.url
        return notices

    def on_end(self, attempt: Attempt, end: StreamEnd, *, started: bool) -> Decision:
        """Decide what follows an attempt.

        Args:
            attempt: the attempt that ended.
            end: how it ended.
            started: whether its stream had started (``broker.start`` seen).

        Returns:
            The decision; the plan has already moved to the next attempt's node and transport.
        """
        if attempt.transport == "sse":
            if end.kind is EndKind.STALLED:
                self._sse_stalls += 1
            elif started:
                self._sse_stalls = 0
        if self._auto and attempt.transport == "sse":
            reason = self._sse_unusable(end)
            if reason is not None:
                self.transport = "ws"
                return Decision(notices=[TransportChanged("ws", reason)])
        if end.kind is EndKind.REJECTED and isinstance(end.error, ClientError):
            return Decision(fatal=end.error)
        self._index = (self._index + 1) % len(self._urls)
        self.failures += 1
        if end.kind is EndKind.SHUTDOWN:
            delay = _jitter((end.retry_ms or 0) / 1000.0, self._rng)
        else:
            delay = backoff_delay(
                self.failures, schedule=self._backoff, max_backoff=self._max_backoff, rng=self._rng
            )
        return Decision(delay=delay, notices=[Reconnecting(self.failures, delay, end.error)])

    def _sse_unusable(self, end: StreamEnd) -> str | None:
        if end.kind is EndKind.REJECTED:
            return f"SSE refused: {end.error}"
        if end.kind is EndKind.NO_START:
            return f"SSE did not start: {end.error}"
        if end.kind is EndKind.STALLED and self._sse_stalls >= SSE_STALLS_BEFORE_SWITCH:
            return f"SSE went silent past the heartbeat window {self._sse_stalls} times in a row"
        return None
