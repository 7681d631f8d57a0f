"""Acknowledgement levels (issue 20): ack = local | replicated, per request or by config."""

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import open_broker_server, start_node, wait_linked


async def test_replicated_publish_is_answered_once_a_peer_stored_it():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [])
            b = await start_node(nursery, "b", [a.cluster.addr])
            c = await start_node(nursery, "c", [a.cluster.addr])
            await wait_linked([a, b, c])
            origin = a.hub.origin
            async with httpx.AsyncClient(base_url=a.url) as client:
                for n, how in enumerate(
                    [{"params": {"ack": "replicated"}}, {"headers": {"X-Broker-Ack": "replicated"}}]
                ):
                    answer = await client.post("/topics/r", json=n, **how)
                    assert answer.status_code == 202, answer.text
                    # at the moment of the 202, some peer already holds it
                    seq = a.hub.vector[origin]
                    assert max(b.hub.vector.get(origin, 0), c.hub.vector.get(origin, 0)) >= seq
                answer = await client.post("/topics/r", json=1, params={"ack": "most"})
                assert answer.status_code == 400
                assert answer.json()["code"] == "bad_request"
                # batches wait for their last event
                answer = await client.post(
                    "/publish",
                    json={"events": [{"topic": "r", "data": n} for n in range(5)]},
                    params={"ack": "replicated"},
                )
                assert answer.status_code == 202, answer.text
                seq = a.hub.vector[origin]
                assert max(b.hub.vector.get(origin, 0), c.hub.vector.get(origin, 0)) >= seq
            nursery.cancel_scope.cancel()


async def test_replicated_by_config_refuses_when_too_few_peers_and_stores_nothing():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a = await start_node(nursery, "a", [], cluster={"ack": "replicated", "min_replicas": 2})
            b = await start_node(nursery, "b", [a.cluster.addr])
            await wait_linked([a, b])
            async with httpx.AsyncClient(base_url=a.url) as client:
                before = a.hub.published
                answer = await client.post("/topics/q", json="x")
                assert answer.status_code == 503
                assert answer.json()["code"] == "not_replicated"
                assert "Retry-After" in answer.headers
                assert a.hub.published == before  # refused before anything was stored
                # ack=local still works on the same node
                answer = await client.post("/topics/q", json="y", params={"ack": "local"})
                assert answer.status_code == 202
            c = await start_node(nursery, "c", [a.cluster.addr])
            await wait_linked([a, b, c])
            async with httpx.AsyncClient(base_url=a.url) as client:
                answer = await client.post("/topics/q", json="z")
                assert answer.status_code == 202, answer.text
                metrics = {
                    sample.name: sample.value
                    for family in text_string_to_metric_families(
                        (await client.get("/metrics")).text
                    )
                    for sample in family.samples
                }
            assert a.cluster.statistics().not_replicated == 1
            assert metrics["broker_publishes_not_replicated_total"] == 1
            assert metrics["broker_catchup_gaps_total"] == 0
            assert metrics["broker_retired_origins"] == 0
            nursery.cancel_scope.cancel()


async def test_replicated_without_a_cluster_is_a_client_error():
    async with open_broker_server() as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            answer = await client.post("/topics/s", json=1, params={"ack": "replicated"})
            assert answer.status_code == 400
            answer = await client.post("/topics/s", json=1, params={"ack": "local"})
            assert answer.status_code == 202
