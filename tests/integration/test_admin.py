"""The admin API against a real broker: who is slow, disconnecting, hot topics, who may."""

import json
import time

import httpx
import jwt
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.integration.test_slow_clients import open_unread_socket
from tests.support.servers import open_broker_server
from tests.support.sse_client import open_sse

SECRET = "a-shared-secret-that-is-long-enough-32"
AUTH = {"auth": {"secret": SECRET}}


def token(claims):
    return jwt.encode({"exp": time.time() + 600, **claims}, SECRET, algorithm="HS256")


def ws_url(server, path):
    return server.url.replace("http://", "ws://") + path


async def wait_for(predicate, timeout=10):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_a_stalled_client_ranks_first_by_lag_among_real_sse_and_ws_clients():
    with trio.fail_after(20):
        async with open_broker_server(stream={"queue_events": 16}) as server:
            calm = await open_sse(server.url, "/topics/calm/events")
            assert (await calm.next_event()).event == "broker.start"
            async with open_websocket_url(ws_url(server, "/topics/calm/ws")) as ws:
                assert json.loads(await ws.get_message())["event"] == "broker.start"
                stalled = await open_unread_socket(server.url, "/topics/big/events")
                stalled_port = stalled.socket.getsockname()[1]
                await wait_for(lambda: server.hub.statistics().subscribers == 3)
                async with httpx.AsyncClient(base_url=server.url) as client:
                    pad = "x" * 32_000
                    for n in range(60):
                        answer = await client.post("/topics/big", json={"n": n, "p": pad})
                        assert answer.is_success
                    assert (await client.post("/topics/calm", json={"ok": 1})).is_success
                    assert (await calm.next_event()).json() == {"ok": 1}
                    assert json.loads(await ws.get_message())["data"] == {"ok": 1}

                    answer = await client.get("/admin/api/connections", params={"sort": "lag"})
                    assert answer.status_code == 200
                    assert answer.headers["content-type"] == "application/json"
                    rows = answer.json()["connections"]
                    assert answer.json()["total"] == 3
                    first = rows[0]
                    assert first["remote"] == f"127.0.0.1:{stalled_port}"
                    assert first["transport"] == "sse"
                    assert first["topics"] == ["big"]
                    assert first["lag_seconds"] > 0
                    assert first["queue_events"] == 16
                    assert first["queue_bytes"] > 16 * 32_000
                    assert first["dropped"] > 0
                    assert first["state"] == "backlogged"
                    others = {r["transport"]: r for r in rows[1:]}
                    assert set(others) == {"sse", "ws"}
                    for row in others.values():
                        assert row["lag_seconds"] == 0
                        assert row["queue_events"] == 0
                        assert row["delivered"] == 1
                        assert row["topics"] == ["calm"]
                        assert row["bytes_out"] > 0

                    by_queue = await client.get("/admin/api/connections?sort=queue&limit=1")
                    assert [r["id"] for r in by_queue.json()["connections"]] == [first["id"]]
                    by_age = (await client.get("/admin/api/connections?sort=age")).json()
                    assert by_age["connections"][0]["transport"] == "sse"
                    assert by_age["connections"][0]["id"] != first["id"]  # calm came first

                    for bad in ("sort=speed", "limit=0", "limit=x", "limit=100000"):
                        refused = await client.get(f"/admin/api/connections?{bad}")
                        assert refused.status_code == 400
                        assert refused.json()["code"] == "bad_request"

                    # Prometheus sees the same: the oldest lag and a lag histogram.
                    metrics = (await client.get("/metrics")).text
                    samples = {
                        sample.name: sample.value
                        for family in text_string_to_metric_families(metrics)
                        for sample in family.samples
                        if not sample.labels.get("le")
                    }
                    assert samples["broker_subscriber_lag_max_seconds"] > 0
                    assert samples["broker_subscriber_lag_seconds_count"] == 3

                    # The stalled client is cut off by the operator even though it never reads.
                    gone = await client.delete(f"/admin/api/connections/{first['id']}")
                    assert gone.status_code == 202
                    await wait_for(lambda: server.hub.statistics().subscribers == 2, 5)
                await stalled.aclose()
            await calm.aclose()
            await wait_for(lambda: server.hub.statistics().subscribers == 0)


async def test_disconnect_tells_sse_and_ws_clients_why_and_ends_their_streams():
    with trio.fail_after(15):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as client:
            sse = await open_sse(server.url, "/topics/t/events")
            assert (await sse.next_event()).event == "broker.start"
            rows = (await client.get("/admin/api/connections")).json()["connections"]
            (row,) = rows
            answer = await client.delete(
                f"/admin/api/connections/{row['id']}", params={"reason": "draining node 3"}
            )
            assert answer.status_code == 202
            assert answer.json()["disconnected"] is True
            notice = await sse.next_event()
            assert notice.event == "broker.disconnected"
            assert notice.json()["reason"] == "draining node 3"
            assert notice.retry is not None
            assert notice.retry >= 60_000  # no tight reconnect loop
            assert notice.json()["retry_ms"] == notice.retry
            assert await sse.next_event() is None  # then the stream ends
            await sse.aclose()

            async with open_websocket_url(ws_url(server, "/topics/t/ws")) as ws:
                assert json.loads(await ws.get_message())["event"] == "broker.start"
                (row,) = (await client.get("/admin/api/connections")).json()["connections"]
                assert row["transport"] == "ws"
                assert (await client.delete(f"/admin/api/connections/{row['id']}")).is_success
                message = json.loads(await ws.get_message())
                assert message["event"] == "broker.disconnected"
                assert message["data"]["retry_ms"] >= 60_000
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1001
            await wait_for(lambda: server.hub.statistics().subscribers == 0)

            missing = await client.delete("/admin/api/connections/999999")
            assert missing.status_code == 404
            assert missing.json()["code"] == "not_found"
            bad = await client.delete("/admin/api/connections/abc")
            assert bad.status_code == 400
            bad_reason = await client.delete("/admin/api/connections/1?reason=" + "x" * 300)
            assert bad_reason.status_code == 400


async def test_topics_sort_by_rate_and_subscribers_and_filter_by_prefix():
    with trio.fail_after(15):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as client:
            listener = await open_sse(server.url, "/topics/jobs/cold/events")
            await listener.next_event()
            for topic, count in (("jobs/hot", 6), ("jobs/warm", 3), ("jobs/cold", 1), ("x", 2)):
                for n in range(count):
                    await client.post(f"/topics/{topic}?retain=1", json={"n": n})
            await client.post("/topics/jobs/warm?event=done&final=1", json={})

            rows = (await client.get("/admin/api/topics?sort=rate")).json()["topics"]
            assert [r["name"] for r in rows] == ["jobs/hot", "jobs/warm", "x", "jobs/cold"]
            hot = rows[0]
            assert hot["published"] == 6
            assert hot["rate"] > 0
            assert hot["history_events"] == 6
            assert hot["retained_types"] == ["message"]
            assert hot["closed"] is False
            assert abs(hot["last_publish"] - time.time()) < 10
            assert rows[1]["closed"] is True

            by_subscribers = (await client.get("/admin/api/topics?sort=subscribers")).json()
            assert by_subscribers["topics"][0]["name"] == "jobs/cold"
            assert by_subscribers["topics"][0]["subscribers"] == 1
            prefixed = (await client.get("/admin/api/topics?prefix=jobs/&limit=2")).json()
            assert prefixed["total"] == 3
            assert [r["name"] for r in prefixed["topics"]] == ["jobs/hot", "jobs/warm"]
            assert (await client.get("/admin/api/topics?sort=size")).status_code == 400
            await listener.aclose()

            cluster = (await client.get("/admin/api/cluster")).json()
            assert cluster["engine"] == "memory"
            assert cluster["node"] == server.hub.origin
            assert cluster["origins"][0]["seq"] == 13


async def test_auth_rules_401_403_and_an_admin_token():
    with trio.fail_after(15):
        async with (
            open_broker_server(**AUTH) as server,
            httpx.AsyncClient(base_url=server.url) as c,
        ):
            for path in ("/admin/api/connections", "/admin/api/topics", "/admin/api/stream"):
                none = await c.get(path)
                assert none.status_code == 401, path
                assert none.json()["code"] == "unauthorized"
                bad = await c.get(path, headers={"Authorization": "Bearer not.a.token"})
                assert bad.status_code == 401
                plain = token({"sub": "alice", "subscribe": ["**"], "publish": ["**"]})
                refused = await c.get(path, headers={"Authorization": f"Bearer {plain}"})
                assert refused.status_code == 403, path
                assert refused.json()["code"] == "forbidden"
            no_delete = await c.delete(
                "/admin/api/connections/1",
                headers={"Authorization": f"Bearer {token({'admin': 'yes'})}"},
            )
            assert no_delete.status_code == 403  # only the JSON value true counts

            admin = {"Authorization": f"Bearer {token({'sub': 'ops', 'admin': True})}"}
            sub = token({"sub": "alice", "subscribe": ["**"]})
            sse = await open_sse(server.url, "/topics/a/events", {"Authorization": f"Bearer {sub}"})
            await sse.next_event()
            answer = await c.get("/admin/api/connections", headers=admin)
            assert answer.status_code == 200
            assert answer.json()["connections"][0]["subject"] == "alice"
            # The cookie works like the header (the admin page in a browser).
            cookie = {"Cookie": f"broker_token={token({'admin': True})}"}
            assert (await c.get("/admin/api/topics", headers=cookie)).status_code == 200
            # ...but a disconnect with the cookie from another site is a cross-site request.
            row = answer.json()["connections"][0]
            forged = await c.delete(
                f"/admin/api/connections/{row['id']}",
                headers={**cookie, "Origin": "https://evil.example"},
            )
            assert forged.status_code == 403
            assert forged.json()["code"] == "cross_origin"
            assert (await c.get("/admin/api/connections", headers=admin)).json()["connections"]
            await sse.aclose()


async def test_without_auth_only_loopback_clients_that_came_through_no_proxy():
    with trio.fail_after(10):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as c:
            assert (await c.get("/admin/api/cluster")).status_code == 200
            proxied = await c.get("/admin/api/cluster", headers={"X-Forwarded-For": "203.0.113.9"})
            assert proxied.status_code == 403
            assert "loopback" in proxied.json()["error"]


async def test_the_stats_stream_sends_the_recent_past_then_a_sample_a_second():
    with trio.fail_after(10):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as c:
            for n in range(3):
                await c.post("/topics/a", json={"n": n})
            stream = await open_sse(server.url, "/admin/api/stream")
            assert stream.status == 200
            assert (await stream.next_event()).event == "broker.start"
            history = await stream.next_event()
            assert history.event == "history"
            assert isinstance(history.json(), list)
            live = await stream.next_event()
            assert live.event == "stats"
            sample = live.json()
            assert {"t", "publishes", "deliveries", "drops", "connections", "max_lag"} <= set(
                sample
            )
            assert sample["connections"] == 0  # the admin stream itself is not counted
            await wait_for(lambda: len(server.hub.stats_feed.watchers) == 1)
            await stream.aclose()
            await wait_for(lambda: not server.hub.stats_feed.watchers)
            assert server.hub.statistics().subscribers == 0


async def test_an_http2_stream_is_listed_as_h2_and_can_be_disconnected():
    with trio.fail_after(15):
        async with (
            open_broker_server() as server,
            httpx.AsyncClient(http1=False, http2=True, timeout=10) as h2,
            httpx.AsyncClient(base_url=server.url) as admin,
        ):
            async with h2.stream("GET", f"{server.url}/topics/two/events") as stream:
                assert stream.http_version == "HTTP/2"
                lines = stream.aiter_lines()
                async for line in lines:
                    if line.startswith("event: broker.start"):
                        break
                (row,) = (await admin.get("/admin/api/connections")).json()["connections"]
                assert row["transport"] == "h2"
                assert row["topics"] == ["two"]
                assert row["remote"].startswith("127.0.0.1:")
                assert (await admin.delete(f"/admin/api/connections/{row['id']}")).is_success
                seen = [line async for line in lines]
                assert "event: broker.disconnected" in seen
            await wait_for(lambda: server.hub.statistics().subscribers == 0)


async def test_clients_cannot_reach_the_internal_stats_topic():
    with trio.fail_after(10):
        async with open_broker_server() as server, httpx.AsyncClient(base_url=server.url) as c:
            for method, path in (
                ("GET", "/topics/$broker/stats/events"),
                ("GET", "/topics/%24broker/stats/events"),
                ("POST", "/topics/$broker/stats"),
                ("GET", "/events?topic=$broker/stats"),
            ):
                answer = await c.request(method, path, json={} if method == "POST" else None)
                assert answer.status_code == 400, path
                assert answer.json()["code"] == "bad_topic"
            batch = await c.post(
                "/publish", json={"events": [{"topic": "$broker/stats", "data": 1}]}
            )
            assert batch.status_code == 400
