"""Abuse limits: connections in total and per client address, publish rate (sans-IO).

A connection counts from accept. Over the per-address limit it is answered ``503`` JSON at
once, before its request head is read: a client that opens sockets and never finishes a head
(slowloris) must not hold a descriptor each while it is refused. Over the total limit the
head is read (within the head timeout) and answered ``503`` with ``Retry-After``; an SSE
request gets ``200``, a jittered ``retry:`` and ``broker.overloaded`` instead, because a
browser never reconnects after a non-200 answer. The publish rate is a token bucket per
token subject, or per client address without a token, answered with ``429`` and
``Retry-After``.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from ..core.errors import ClientError

#: Most rate buckets kept; the least recently used are forgotten (a full bucket).
MAX_BUCKETS: Final = 100_000


class TooManyRequests(ClientError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))
        #: Seconds until the bucket has the tokens again (``Retry-After`` rounds it up).
        self.wait_seconds = retry_after


class Overloaded(ClientError):
    status = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets: ``rate`` events per second, bursts of ``burst``; ``rate`` 0 is off."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.limited = 0

    def take(self, key: str, now: float, count: int = 1) -> None:
        """Spend ``count`` tokens of ``key``'s bucket.

        Raises:
            TooManyRequests: with the seconds until enough tokens are back.
        """
        if not self.rate:
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens < count:
            self.limited += 1
            wait = (count - bucket.tokens) / self.rate
            raise TooManyRequests(
                f"publish rate over {self.rate:g}/s (burst {self.burst}); retry in {wait:.1f} s",
                wait,
            )
        bucket.tokens -= count


class Admission(enum.Enum):
    """What :meth:`ConnectionLimiter.open` decided for a new connection."""

    ADMITTED = "admitted"
    OVER_TOTAL = "over the total limit"
    OVER_ADDRESS = "over the per-address limit"


class ConnectionLimiter:
    """Counts open connections in total and per client address, from accept."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.by_ip: dict[str, int] = {}
        self.refused = 0

    def open(self, ip: str) -> Admission:
        """Count a new connection, unless it is over a limit (then it is not counted)."""
        per_ip = self.by_ip.get(ip, 0)
        if self.max_per_ip and per_ip >= self.max_per_ip:
            self.refused += 1
            return Admission.OVER_ADDRESS
        if self.max_total and self.total >= self.max_total:
            self.refused += 1
            return Admission.OVER_TOTAL
        self.total += 1
        self.by_ip[ip] = per_ip + 1
        return Admission.ADMITTED

    def close(self, ip: str) -> None:
        self.total -= 1
        left = self.by_ip[ip] - 1
        if left:
            self.by_ip[ip] = left
        else:
            del self.by_ip[ip]
