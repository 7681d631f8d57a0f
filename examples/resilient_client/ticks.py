"""A publisher of timestamped ticks, so a page can measure its delivery latency.

Events on the ticks topic (``ticks`` by default): ``tick`` with ``{"seq", "sent_at"}``, where
``sent_at`` is the publisher's wall clock in milliseconds since the epoch (data, not a timer).
The page subtracts it from its own clock on arrival: publisher → broker → page latency, exact
when both run on one machine, off by the clock skew otherwise.

The publisher keeps going when the broker is away (a restart, a deploy): a tick it cannot
publish is reported and skipped, the next one is tried on time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import trio
from broker_client import BrokerClient, BrokerError

from .._shared import say

DEFAULT_TOPIC: Final = "ticks"
TICK_EVENT: Final = "tick"


async def publish_ticks(
    client: BrokerClient,
    topic: str,
    *,
    interval: float,
    count: int | None = None,
    first_seq: int = 0,
    on_error: Callable[[str], object] = say,
) -> int:
    """Publish ``tick`` events every ``interval`` seconds, forever or ``count`` of them.

    Returns:
        The next sequence number.
    """
    seq = first_seq
    while count is None or seq < first_seq + count:
        if seq != first_seq:
            await trio.sleep(interval)
        tick = {"seq": seq, "sent_at": time.time() * 1000}
        try:
            await client.publish(topic, tick, event=TICK_EVENT)
        except BrokerError as error:
            on_error(f"tick {seq} not published ({error}); trying again in {interval} s")
        seq += 1
    return seq
