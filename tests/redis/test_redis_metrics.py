"""``/metrics`` on the Redis engine: the store's rows, read at scrape time, move."""

from __future__ import annotations

import coredis
import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.redis.conftest import RedisServer, needs_redis
from tests.redis.scenarios import collect, post, start_nodes, started, until, wait_for_async
from tests.support.sse_client import open_sse

pytestmark = needs_redis


async def scrape(url: str) -> dict[str, float]:
    """Every sample of ``/metrics``: ``name{label="v",...}`` (labels sorted) -> value."""
    async with httpx.AsyncClient(base_url=url) as client:
        text = (await client.get("/metrics")).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


UP = 'broker_store_up{engine="redis",kind="single"}'


async def test_metrics_show_the_store_and_move(redis_server: RedisServer, key_prefix):
    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            coredis.Redis.from_url(redis_server.url, decode_responses=True) as redis,
        ):
            (a,) = await start_nodes(nursery, redis_server.url, key_prefix, 1)
            first = await scrape(a.url)
            assert first[UP] == 1
            assert first["broker_store_topics_followed"] == 0
            for name in ("events_published", "announcements", "gap_reads", "reconnects"):
                assert first[f"broker_store_{name}_total"] == 0, name

            stream = await open_sse(a.url, "/topics/m/events")
            await started(stream)
            for n in range(3):
                await post(a.url, "m", n)
            assert [e.json() for e in await collect(stream, 3)] == [0, 1, 2]
            live = await scrape(a.url)
            assert live["broker_store_topics_followed"] == 1
            assert live["broker_store_events_published_total"] == 3
            assert live["broker_store_appends_total"] == 3
            assert live["broker_store_announcements_total"] >= 3
            assert live["broker_store_announcements_delivered_total"] == 3
            assert live["broker_store_gap_reads_total"] == 0

            # an entry stored without its announcement: the next one does not chain
            await redis.xadd(f"{key_prefix}:{{m}}", {"f": "1", "t": "0", "e": "", "d": "3"})
            await post(a.url, "m", 4)
            assert [e.json() for e in await collect(stream, 2)] == [3, 4]
            gap = await scrape(a.url)
            assert gap["broker_store_gap_reads_total"] >= 1
            assert gap["broker_store_reads_total"] > live["broker_store_reads_total"]
            assert (
                gap["broker_store_events_read_total"] >= live["broker_store_events_read_total"] + 2
            )

            await trio.to_thread.run_sync(redis_server.kill)
            await post(a.url, "m", 5, expect=503)
            down = await scrape(a.url)
            assert down[UP] == 0
            assert down["broker_store_failures_total"] >= 1

            await trio.to_thread.run_sync(redis_server.start)  # empty: the stream lost m
            await until(stream, "broker.recovered")
            back = await scrape(a.url)
            assert back[UP] == 1
            assert back["broker_store_reconnects_total"] >= 1
            assert back["broker_store_resets_total"] == 1

            async def followed_none() -> bool:
                return (await scrape(a.url))["broker_store_topics_followed"] == 0

            await stream.aclose()
            await wait_for_async(followed_none)  # redis_idle_topic_seconds later
            nursery.cancel_scope.cancel()


async def test_store_commit_latency_and_the_dashboard_store_panels(
    redis_server: RedisServer, key_prefix
):
    from tests.integration.test_grafana_dashboard import STORE_PREFIX, dashboard_metrics

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            (a,) = await start_nodes(nursery, redis_server.url, key_prefix, 1)
            for n in range(3):
                await post(a.url, "c", n)
            samples = await scrape(a.url)
            assert samples["broker_store_commit_seconds_count"] == 3
            assert samples["broker_store_commit_seconds_sum"] > 0
            wanted = {m for m in dashboard_metrics() if m.startswith(STORE_PREFIX)}
            assert wanted
            names = {key.split("{", 1)[0] for key in samples}
            assert wanted - names == set()
            async with httpx.AsyncClient(base_url=a.url) as client:
                cluster = (await client.get("/admin/api/cluster")).json()
            assert cluster["engine"] == "redis"
            assert cluster["store"]["last_commit_seconds"] > 0
            a.request_shutdown()
