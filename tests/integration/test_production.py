"""Production features against a real broker: auth, limits, CORS, metrics, readiness."""

import json
import re
import time

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from trio_websocket import open_websocket_url

from tests.support.servers import open_broker_server
from tests.support.sse_client import open_sse

SECRET = "a-shared-secret-that-is-long-enough-32"


def token(claims, key=SECRET, algorithm="HS256"):
    return jwt.encode({"exp": time.time() + 600, **claims}, key, algorithm=algorithm)


AUTH = {"auth": {"secret": SECRET, "anonymous_subscribe": ("public/**",)}}


async def test_publishing_needs_a_token_that_covers_the_topic():
    with trio.fail_after(10):
        async with (
            open_broker_server(**AUTH) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            none = await client.post("/topics/jobs/1", json=1)
            assert none.status_code == 401
            assert none.json()["code"] == "unauthorized"
            assert none.headers["www-authenticate"].startswith("Bearer")
            cases = [
                (
                    token({"publish": ["jobs/*"]}, key="another-secret-entirely-and-long-enough"),
                    "signature",
                ),
                (token({"publish": ["jobs/*"], "exp": time.time() - 3600}), "expired"),
                ("not.a.jwt", "invalid token"),
            ]
            for bad, words in cases:
                answer = await client.post(
                    "/topics/jobs/1", json=1, headers={"Authorization": f"Bearer {bad}"}
                )
                assert answer.status_code == 401
                assert words in answer.json()["error"]
            good = {"Authorization": "Bearer " + token({"sub": "svc", "publish": ["jobs/*"]})}
            assert (await client.post("/topics/jobs/1", json=1, headers=good)).status_code == 202
            deeper = await client.post("/topics/jobs/1/x", json=1, headers=good)
            assert deeper.status_code == 403
            assert deeper.json()["code"] == "forbidden"
            batch = await client.post(
                "/publish",
                headers=good,
                json={"events": [{"topic": "jobs/2", "data": 1}, {"topic": "alerts", "data": 2}]},
            )
            assert batch.status_code == 403
            assert server.hub.statistics().published == 1


async def test_subscribing_anonymous_patterns_cookie_and_query_token():
    with trio.fail_after(10):
        tables = {"auth": {**AUTH["auth"], "query_token": True}}
        async with (
            open_broker_server(**tables) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            public = await open_sse(server.url, "/topics/public/news/events")
            assert public.status == 200
            await public.aclose()
            assert (await client.get("/topics/private/events")).status_code == 401
            reader = token({"subscribe": ["private"]})
            by_cookie = await open_sse(
                server.url,
                "/topics/private/events",
                {"Cookie": f"theme=dark; broker_token={reader}"},
            )
            assert by_cookie.status == 200
            await by_cookie.aclose()
            by_query = await open_sse(server.url, f"/topics/private/events?access_token={reader}")
            assert by_query.status == 200
            await by_query.aclose()
            other = await client.get(
                "/events?topic=private&topic=secret", headers={"Authorization": f"Bearer {reader}"}
            )
            assert other.status_code == 403
        async with (
            open_broker_server(**AUTH) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            # query tokens are off unless configured (they end up in access logs)
            off = await client.get(f"/topics/private/events?access_token={reader}")
            assert off.status_code == 401


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_public_key_algorithms(tmp_path, algorithm):
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(pem)
    tables = {"auth": {"algorithm": algorithm, "public_key_file": str(key_file)}}
    with trio.fail_after(10):
        async with (
            open_broker_server(**tables) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            claims = {"publish": ["**"], "exp": time.time() + 600}
            signed = jwt.encode(claims, private, algorithm=algorithm)
            ok = await client.post(
                "/topics/a", json=1, headers={"Authorization": f"Bearer {signed}"}
            )
            assert ok.status_code == 202
            forged = token({"publish": ["**"]})  # HS256 with a guessable key: refused
            bad = await client.post(
                "/topics/a", json=1, headers={"Authorization": f"Bearer {forged}"}
            )
            assert bad.status_code == 401


async def test_websocket_commands_respect_the_token():
    with trio.fail_after(10):
        async with open_broker_server(**AUTH) as server:
            url = server.url.replace("http", "ws") + "/topics/public/a/ws"
            async with open_websocket_url(url) as ws:
                assert json.loads(await ws.get_message())["event"] == "broker.start"
                await ws.send_message(json.dumps({"op": "subscribe", "topics": ["private"]}))
                answer = json.loads(await ws.get_message())
                assert answer["event"] == "broker.command_error"
                assert answer["data"]["code"] == "unauthorized"


async def test_connection_and_rate_limits():
    # The total limit: the request is read, so SSE gets its 200 notice. (Over the per-address
    # limit a connection is refused before its head: tests/integration/test_slowloris.py.)
    tables = {"limits": {"max_connections": 3, "publish_rate": 2.0, "publish_burst": 3}}
    with trio.fail_after(15):
        async with open_broker_server(**tables) as server:
            streams = [await open_sse(server.url, "/topics/l/events") for _ in range(3)]
            for stream in streams:
                await stream.next_event()
            over = await open_sse(server.url, "/topics/l/events")
            assert over.status == 200  # a browser would give up for good on anything else
            notice = await over.next_event()
            assert notice.event == "broker.overloaded"
            assert notice.retry == notice.json()["retry_ms"] >= 3000
            assert await over.next_event() is None
            async with httpx.AsyncClient(base_url=server.url) as client:
                refused = await client.post("/topics/l", json=1)
                assert refused.status_code == 503
                assert int(refused.headers["retry-after"]) >= 1
            for stream in streams:
                await stream.aclose()
            with trio.fail_after(5):
                while server.dataplane.policy.connections.total:
                    await trio.sleep(0.01)
            async with httpx.AsyncClient(base_url=server.url) as client:
                answers = [(await client.post("/topics/l", json=n)).status_code for n in range(5)]
                assert answers[:3] == [202, 202, 202]
                assert 429 in answers[3:]
                limited = await client.post("/topics/l", json=9)
                assert limited.status_code == 429
                assert limited.json()["code"] == "rate_limited"
                assert int(limited.headers["retry-after"]) >= 1
            assert server.dataplane.policy.rate.limited >= 2


async def test_cors_allow_list_and_preflight():
    tables = {"cors": {"allow_origins": ("https://app.example",), "allow_credentials": True}}
    with trio.fail_after(10):
        async with (
            open_broker_server(**tables) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            allowed = await open_sse(
                server.url, "/topics/c/events", {"Origin": "https://app.example"}
            )
            assert allowed.headers["access-control-allow-origin"] == "https://app.example"
            assert allowed.headers["access-control-allow-credentials"] == "true"
            assert "Last-Event-ID" in allowed.headers["access-control-expose-headers"]
            await allowed.aclose()
            stranger = await open_sse(
                server.url, "/topics/c/events", {"Origin": "https://evil.example"}
            )
            assert "access-control-allow-origin" not in stranger.headers
            await stranger.aclose()
            preflight = await client.options(
                "/topics/c",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type, last-event-id",
                },
            )
            assert preflight.status_code == 204
            assert "POST" in preflight.headers["access-control-allow-methods"]
            assert "Last-Event-ID" in preflight.headers["access-control-allow-headers"]
            refused = await client.options("/topics/c", headers={"Origin": "https://evil.example"})
            assert refused.status_code == 403
            posted = await client.post(
                "/topics/c", json=1, headers={"Origin": "https://app.example"}
            )
            assert posted.headers["access-control-allow-origin"] == "https://app.example"
        async with (
            open_broker_server(cors={"allow_origins": ("*",)}) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            anyone = await client.post("/topics/c", json=1, headers={"Origin": "https://x.example"})
            assert anyone.headers["access-control-allow-origin"] == "*"


async def test_metrics_readiness_and_connection_logs(caplog):
    caplog.set_level("INFO", logger="broker.edge.session")
    with trio.fail_after(10):
        async with (
            open_broker_server(stream={"queue_events": 4}) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            stream = await open_sse(server.url, "/topics/jobs/1/events")
            await stream.next_event()
            await client.post("/topics/jobs/1", json=1)
            await stream.events(1)
            text = (await client.get("/metrics")).text
            assert 'broker_connections{transport="sse"} 1.0' in text
            assert 'broker_events_published_total{class="jobs"} 1.0' in text
            assert "broker_events_delivered_total 1.0" in text
            assert 'broker_delivery_wait_seconds_bucket{le="0.001"} 1.0' in text
            assert 'broker_queue_depth_bucket{le="0"} 1.0' in text
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).json() == {"status": "ready"}
            await stream.aclose()
            with trio.fail_after(5):
                while "stream closed transport=sse" not in caplog.text:
                    await trio.sleep(0.01)
            assert "delivered=1" in caplog.text
            server.hub.close()  # the first step of a shutdown
            assert (await client.get("/readyz")).status_code == 503


async def test_a_rate_limited_connection_is_read_again_only_once_a_token_is_back():
    tables = {"limits": {"publish_rate": 4.0, "publish_burst": 1}}
    post = b"POST /topics/r HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
    with trio.fail_after(10):
        async with open_broker_server(**tables) as server:
            flooder = await trio.open_tcp_stream("127.0.0.1", server.port)
            await flooder.send_all(post * 3)  # pipelined: as fast as it can
            answers = b""
            while answers.count(b"HTTP/1.1 ") < 3:
                answers += await flooder.receive_some(65536)
            statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)]
            # Read at once, the third would be refused too; held until the bucket refilled
            # (0.25 s), it is accepted.
            assert statuses == [202, 429, 202]
            assert server.hub.published == 2
            await flooder.aclose()
