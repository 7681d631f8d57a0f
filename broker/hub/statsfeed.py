"""The hub's once-a-second vital signs, kept for 15 minutes and streamed on an internal topic.

Theory of operation. A task the hub owns (``facade.open_hub``) calls :meth:`StatsFeed.tick`
once a second. A tick walks the subscribers once (O(connections), off the hot path: nothing
per event is added for it), turns the hub's running totals into per-second rates against
the previous tick, keeps the sample in a ring of :data:`HISTORY_SAMPLES`, and hands it as an
event on :data:`STATS_TOPIC` to its watchers, if there are any.

:data:`STATS_TOPIC` starts with ``$``, which no topic name may (``topics.check_topic``): no
client can publish to it or subscribe to it on the public routes. The only way in is the
admin stream (``admin.py``), which checks the admin token first. Samples are not counted
as publishes, not kept in the topic's history and not replicated to peers: the ring is
their history, and every node has its own.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from .events import Event

if TYPE_CHECKING:
    from .facade import Hub
    from .subscriber import Subscriber

#: The internal topic the samples are delivered on (not a valid client topic name).
STATS_TOPIC: Final = "$broker/stats"
#: Seconds between samples.
INTERVAL_SECONDS: Final = 1.0
#: Samples kept: 15 minutes at one a second.
HISTORY_SAMPLES: Final = 900


class StatsFeed:
    """The ring of recent samples and the running totals the rates are computed from."""

    def __init__(self) -> None:
        self.samples: deque[dict[str, Any]] = deque(maxlen=HISTORY_SAMPLES)
        #: The admin streams watching the feed (``admin.watch_stats`` registers them).
        self.watchers: dict[Subscriber, None] = {}
        self._previous: tuple[float, int, int, int] | None = None

    def tick(self, hub: Hub, now: float) -> dict[str, Any]:
        """Take one sample of ``hub`` at trio time ``now``, keep it and deliver it.

        Returns:
            the sample: ``t`` (epoch seconds), rates per second (``publishes``,
            ``deliveries``, ``drops``), and gauges (``connections`` by transport,
            ``queued`` frames, ``max_lag`` seconds, ``topics``).
        """
        delivered, dropped = hub._delivered_by_gone, hub._dropped_by_gone
        queued = 0
        max_lag = 0.0
        by_transport: dict[str, int] = {}
        for subscriber in hub._subscribers:
            if subscriber in self.watchers:
                continue  # the admin pages watching this feed are not load
            delivered += subscriber.delivered
            dropped += subscriber.mailbox.dropped
            depth = len(subscriber.mailbox)
            if depth:
                queued += depth
                lag = subscriber.lag(now)
                if lag > max_lag:
                    max_lag = lag
            by_transport[subscriber.transport] = by_transport.get(subscriber.transport, 0) + 1
        published = hub.published
        rates = {"publishes": 0.0, "deliveries": 0.0, "drops": 0.0}
        if self._previous is not None:
            then, p0, d0, x0 = self._previous
            elapsed = max(now - then, 1e-6)
            rates = {
                "publishes": round(max(0, published - p0) / elapsed, 2),
                "deliveries": round(max(0, delivered - d0) / elapsed, 2),
                "drops": round(max(0, dropped - x0) / elapsed, 2),
            }
        self._previous = (now, published, delivered, dropped)
        sample: dict[str, Any] = {
            "t": round(time.time(), 3),
            **rates,
            "connections": sum(by_transport.values()),
            "by_transport": by_transport,
            "queued": queued,
            "max_lag": round(max_lag, 3),
            "topics": len(hub._topics),
            "evicted": hub.evicted,
        }
        self.samples.append(sample)
        if self.watchers:
            self._deliver(hub, sample)
        return sample

    def _deliver(self, hub: Hub, sample: dict[str, Any]) -> None:
        position = hub.position
        event = Event(
            topic=STATS_TOPIC,
            event_type="stats",
            data=json.dumps(sample, separators=(",", ":")),
            is_json=True,
            origin=hub.origin,
            seq=0,
            index=0,
            event_id=position,
            published_at=sample["t"],
        )
        for subscriber in list(self.watchers):
            subscriber.offer(event)
