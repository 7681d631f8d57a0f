"""docs/grafana-dashboard.json only queries metrics a real broker exports (and they move);
the admin API's cluster view of the same two-node mesh."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import start_node, wait_linked
from tests.support.sse_client import open_sse

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
_METRIC = re.compile(r"\bbroker_[a-z0-9_]+\b")
#: Exported only by the Redis engine: checked in tests/redis/test_redis_metrics.py.
STORE_PREFIX = "broker_store_"


def dashboard_metrics() -> set[str]:
    """Every metric name used by the dashboard's queries and template variables."""
    board = json.loads(DASHBOARD.read_text())
    texts = [t["expr"] for p in board["panels"] for t in p["targets"]]
    texts += [v.get("query", "") for v in board["templating"]["list"]]
    return {name for text in texts for name in _METRIC.findall(str(text))}


async def scrape(url: str) -> dict[str, float]:
    """Sample name -> value (the last labelled series wins; names are what matter here)."""
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_the_dashboard_is_valid_grafana_json():
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] for p in board["panels"])
    assert len(dashboard_metrics()) >= 15


async def test_every_metric_the_dashboard_queries_is_exported():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [])
            b = await start_node(nursery, "b", [a.cluster.addr])
            await wait_linked([a, b])
            stalled = await open_sse(b.url, "/topics/t/events")  # a subscriber for the gauges
            async with httpx.AsyncClient(base_url=a.url) as client:
                assert (await client.post("/topics/t", json={"n": 1})).status_code == 202
            with trio.fail_after(10):
                while b.hub.vector.get(a.hub.origin) != 1:
                    await trio.sleep(0.02)
            exported = set(await scrape(a.url)) | set(await scrape(b.url))
            wanted = {m for m in dashboard_metrics() if not m.startswith(STORE_PREFIX)}
            assert wanted - exported == set()
            on_b = await scrape(b.url)
            assert on_b["broker_peer_replication_delay_seconds"] >= 0
            assert on_b["broker_subscriber_lag_max_seconds"] == 0
            assert on_b["broker_subscriber_lag_seconds_count"] == 1
            async with httpx.AsyncClient(base_url=b.url) as client:
                cluster = (await client.get("/admin/api/cluster")).json()
            assert cluster["engine"] == "mesh"
            assert cluster["node"] == "b"
            assert [(n["node"], n["state"]) for n in cluster["nodes"]] == [("a", "up")]
            delays = {o["origin"]: o["delay_seconds"] for o in cluster["origins"]}
            assert delays[a.hub.origin] >= 0  # replicated from a
            assert delays[b.hub.origin] is None  # b's own
            await stalled.aclose()
            a.request_shutdown()
            b.request_shutdown()
