"""``/metrics`` in Prometheus text format, read from the components at scrape time.

Nothing on the hot path updates a metric object: the hub, data plane, limits and cluster
keep plain counters, and this collector turns them into metric families when Prometheus
scrapes, so instrumentation costs nothing per delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..hub.latency import LatencyHistogram

if TYPE_CHECKING:  # importing the engine imports coredis: only when Redis is configured
    from ..engines.redis.engine import RedisStatistics

DEPTH_BOUNDS = (0, 1, 4, 16, 64, 256, 1024, 4096)
LAG_BOUNDS = (0.0, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0)


class BrokerCollector(Collector):
    """Collects from a running server (``server.RunningServer``), given lazily."""

    def __init__(self, server: Callable[[], Any]) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server()
        hub, dataplane = server.hub, server.dataplane
        stats = hub.statistics()

        connections = GaugeMetricFamily(
            "broker_connections", "Open client connections by transport", labels=["transport"]
        )
        streams, plane = server.streams.statistics(), dataplane.statistics()
        connections.add_metric(["sse"], streams.sse)
        connections.add_metric(["ws"], streams.ws)
        connections.add_metric(["http"], plane.connections - plane.streams)
        connections.add_metric(["hypercorn"], server.control.statistics().connections)
        yield connections
        yield GaugeMetricFamily("broker_subscribers", "Open subscriber streams", stats.subscribers)
        yield GaugeMetricFamily(
            "broker_subscriptions", "Topic subscriptions of all streams", stats.subscriptions
        )
        yield GaugeMetricFamily("broker_topics", "Topics in memory", stats.topics)
        yield GaugeMetricFamily(
            "broker_ready", "1 while serving, 0 while shutting down", 0 if hub.closed else 1
        )

        published = CounterMetricFamily(
            "broker_events_published",
            "Events delivered on this node by topic class "
            "(first topic segment), local and replicated",
            labels=["class"],
        )
        for topic_class, count in hub.published_by_class.items():
            published.add_metric([topic_class], count)
        yield published
        fanout = CounterMetricFamily(
            "broker_event_fanout", "Events handed to subscribers by topic class", labels=["class"]
        )
        for topic_class, count in hub.fanout_by_class.items():
            fanout.add_metric([topic_class], count)
        yield fanout
        yield CounterMetricFamily(
            "broker_events_delivered", "Events written to subscribers", stats.delivered
        )
        yield CounterMetricFamily(
            "broker_events_dropped", "Events dropped from full subscriber queues", stats.dropped
        )
        yield CounterMetricFamily(
            "broker_subscribers_evicted", "Subscribers disconnected for not reading", stats.evicted
        )

        now = trio.current_time()
        depths = []
        lags = []
        for subscriber in hub._subscribers:
            depths.append(len(subscriber.mailbox))
            lags.append(subscriber.lag(now))
        yield _histogram(
            "broker_queue_depth", "Frames waiting per subscriber (now)", DEPTH_BOUNDS, depths
        )
        yield _histogram(
            "broker_subscriber_lag_seconds",
            "Age of each subscriber's oldest undelivered event (now; 0 when nothing waits)",
            LAG_BOUNDS,
            lags,
        )
        yield GaugeMetricFamily(
            "broker_subscriber_lag_max_seconds",
            "Age of the oldest undelivered event of any subscriber (now)",
            max(lags, default=0.0),
        )
        yield _latency(hub.latency, stats.delivered)

        errors = CounterMetricFamily(
            "broker_internal_errors",
            "Unexpected exceptions contained to one connection (core/guard.py), by where",
            labels=["where"],
        )
        for where, count in hub.faults.counts.items():
            errors.add_metric([where], count)
        yield errors

        policy = dataplane.policy
        yield CounterMetricFamily(
            "broker_rate_limited", "Publishes refused by the rate limit", policy.rate.limited
        )
        yield CounterMetricFamily(
            "broker_connections_refused",
            "Connections refused by connection limits",
            policy.connections.refused,
        )
        yield CounterMetricFamily(
            "broker_request_timeouts",
            "Request heads or bodies that came too slowly (answered 408)",
            dataplane.statistics().request_timeouts,
        )
        accept = server.acceptor.statistics()
        yield CounterMetricFamily(
            "broker_accept_failures",
            "accept() calls that failed for lack of descriptors or memory",
            accept.failures,
        )
        yield CounterMetricFamily(
            "broker_connections_closed_for_room",
            "Connections waiting for a request closed to free a descriptor",
            dataplane.statistics().closed_for_room,
        )

        cluster = server.cluster
        if cluster is not None:
            info = cluster.statistics()
            up = GaugeMetricFamily("broker_peer_up", "Peer link state", labels=["peer"])
            lag = GaugeMetricFamily(
                "broker_peer_lag_events",
                "Events this node has that the peer has not confirmed",
                labels=["peer"],
            )
            delay = GaugeMetricFamily(
                "broker_peer_replication_delay_seconds",
                "Publish at the peer to delivery here, of the last event replicated from it",
                labels=["peer"],
            )
            for peer in info.peers:
                up.add_metric([peer.node], 1 if peer.state == "up" else 0)
                if peer.lag_events is not None:
                    lag.add_metric([peer.node], peer.lag_events)
                seconds = hub.replication_delay.get(peer.origin or "")
                if seconds is not None:
                    delay.add_metric([peer.node], max(0.0, seconds))
            yield up
            yield lag
            yield delay
            yield CounterMetricFamily(
                "broker_replicated_in", "Events received from peers", info.replicated_in
            )
            yield CounterMetricFamily(
                "broker_replicated_out", "Events sent to peers", info.replicated_out
            )
            yield CounterMetricFamily("broker_events_lost", "Events given up as lost", info.lost)
            catchup = info.catchup
            yield GaugeMetricFamily(
                "broker_catchup_origins",
                "Origins being pulled from a peer",
                len(catchup.pulling),
            )
            for name, help_text, key in (
                ("broker_catchup_pages", "Catch-up pages answered by peers", "pages"),
                ("broker_catchup_stalls", "Catch-up pulls moved to another peer", "stalls"),
                (
                    "broker_catchup_gaps",
                    "Ranges declared lost (no reachable peer held them)",
                    "gaps",
                ),
            ):
                yield CounterMetricFamily(name, help_text, getattr(catchup, key))
            yield CounterMetricFamily(
                "broker_publishes_not_replicated",
                "Publishes with ack=replicated answered 503 not_replicated",
                info.not_replicated,
            )
            yield GaugeMetricFamily(
                "broker_retired_origins",
                "Origins retired from this node's ids",
                info.retired_origins,
            )

        store = server.store
        if store is not None:
            yield from _store_metrics(store.statistics(), store.commit_latency)


#: The event store's counters (``RedisStatistics``): name, help, field.
STORE_COUNTERS = (
    ("broker_store_events_published", "Events the store acknowledged", "published"),
    ("broker_store_appends", "Publish round trips the store answered", "appends"),
    ("broker_store_reads", "Range-read round trips (catch-up, gaps, recovery)", "reads"),
    ("broker_store_events_read", "Events read back from the store by range reads", "entries_read"),
    ("broker_store_announcements", "Live announcements received", "messages"),
    (
        "broker_store_announcements_delivered",
        "Events delivered straight from their announcement",
        "delivered_from_messages",
    ),
    (
        "broker_store_gap_reads",
        "Announcements that did not follow this node's last entry (the topic was read instead)",
        "gap_reads",
    ),
    ("broker_store_reconnects", "Reconnections to the store", "reconnects"),
    ("broker_store_failures", "Store calls that failed (each marks the store down)", "failures"),
    ("broker_store_resets", "Topics whose stream lost this node's last entry", "resets"),
)


def _store_metrics(info: RedisStatistics, commits: LatencyHistogram) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "broker_store_up", "1 while the event store is reachable", labels=["engine", "kind"]
    )
    up.add_metric([info.engine, info.kind], 1 if info.state == "up" else 0)
    yield up
    yield GaugeMetricFamily(
        "broker_store_topics_followed",
        "Topics this node follows in the store",
        info.tracked_topics,
    )
    yield GaugeMetricFamily(
        "broker_store_shards_down",
        "Redis Cluster masters that are down (their topics are refused)",
        len(info.shards_down),
    )
    for name, documentation, key in STORE_COUNTERS:
        yield CounterMetricFamily(name, documentation, getattr(info, key))
    yield _waits(
        "broker_store_commit_seconds",
        "Publish round trips to the store, from send to its answer",
        commits,
        0,
    )


def _histogram(
    name: str, doc: str, bounds: tuple[float, ...], values: list[int] | list[float]
) -> Metric:
    buckets = []
    for bound in bounds:
        buckets.append((str(bound), sum(1 for v in values if v <= bound)))
    buckets.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=sum(values))


def _latency(histogram: LatencyHistogram, delivered: int) -> Metric:
    # Write-through deliveries never waited: they belong in the first bucket.
    immediate = max(0, delivered - histogram.observed)
    return _waits(
        "broker_delivery_wait_seconds",
        "Publish to socket write on this node (queued deliveries waited; others did not)",
        histogram,
        immediate,
    )


def _waits(name: str, doc: str, histogram: LatencyHistogram, immediate: int) -> Metric:
    buckets = []
    running = immediate
    for bound, count in zip(histogram.BOUNDS, histogram.counts, strict=False):
        running += count
        buckets.append((str(bound), running))
    buckets.append(("+Inf", running + histogram.counts[-1]))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=histogram.total)


def make_registry(server: Callable[[], Any]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(server))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
