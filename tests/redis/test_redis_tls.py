"""TLS to Redis: ``rediss://`` with a CA file and a client certificate (redis-server 7.0)."""

from __future__ import annotations

import httpx
import trio

from tests.redis.conftest import TlsRedisServer, needs_redis
from tests.redis.scenarios import collect, post, refused_at_start, start_nodes, started
from tests.support.sse_client import open_sse

pytestmark = needs_redis


def tls_keys(server: TlsRedisServer) -> dict[str, str]:
    files = server.certificates
    return {
        "redis_tls_ca_file": files.ca,
        "redis_tls_cert_file": files.client_cert,
        "redis_tls_key_file": files.client_key,
    }


async def test_brokers_share_a_tls_only_redis(tls_redis: TlsRedisServer, key_prefix):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b = await start_nodes(
                nursery, tls_redis.url, key_prefix, 2, cluster=tls_keys(tls_redis)
            )
            stream = await open_sse(b.url, "/topics/t/events")
            await started(stream)
            await post(a.url, "t", "over TLS")
            assert [e.json() for e in await collect(stream, 1)] == ["over TLS"]
            async with httpx.AsyncClient(base_url=a.url) as client:
                stats = (await client.get("/stats")).json()["cluster"]
            assert (stats["redis"], stats["state"]) == (tls_redis.url, "up")
            await stream.aclose()
            nursery.cancel_scope.cancel()


def test_redis_certificate_is_verified_and_ours_is_required(tls_redis: TlsRedisServer):
    keys = tls_keys(tls_redis)
    base = {
        "BROKER_CLUSTER_ENABLED": "true",
        "BROKER_CLUSTER_ENGINE": "redis",
        "BROKER_CLUSTER_REDIS_URL": tls_redis.url,
        "BROKER_CLUSTER_REDIS_TIMEOUT_SECONDS": "1",
    }
    # Redis asks for a client certificate: it says so in the handshake, or resets the
    # connection just after it, whichever the timing gives
    no_client_certificate = ("CERTIFICATE_REQUIRED", "reset by peer", "Connection lost")
    for missing, expected in (
        ("redis_tls_ca_file", ("CERTIFICATE_VERIFY_FAILED",)),  # our CA is not the system's
        ("redis_tls_cert_file", no_client_certificate),
    ):
        env = {**base}
        for name, value in keys.items():
            if name != missing and not (missing == "redis_tls_cert_file" and "key" in name):
                env[f"BROKER_CLUSTER_{name.upper()}"] = value
        line = refused_at_start(env)
        assert "cannot use Redis" in line
        assert any(reason in line for reason in expected), line
