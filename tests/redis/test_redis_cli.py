"""`broker cluster --nodes N` on the Redis engine, as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
import trio

from tests.cluster.test_cli_cluster import consecutive_free
from tests.redis.conftest import RedisServer, needs_redis
from tests.support.servers import ROOT
from tests.support.sse_client import open_sse

pytestmark = [needs_redis, pytest.mark.slow]


def launch(*args: str, **extra_env: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra_env}
    return subprocess.Popen(
        [sys.executable, "-m", "broker", "cluster", *args],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


async def wait_on_redis(url: str, timeout: float = 20) -> dict:
    """Wait until the node answers on the Redis engine with Redis up; return its stats."""
    with trio.fail_after(timeout):
        while True:
            try:
                async with httpx.AsyncClient(base_url=url) as client:
                    stats = (await client.get("/stats")).json()
                if stats["cluster"]["state"] == "up":
                    return stats["cluster"]
            except httpx.HTTPError:
                pass
            await trio.sleep(0.1)


async def publish_and_receive(urls: list[str], topic: str) -> None:
    """Subscribed on the last node, published on the first: received."""
    with trio.fail_after(20):
        stream = await open_sse(urls[-1], f"/topics/{topic}/events")
        assert (await stream.next_event()).event == "broker.start"
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{urls[0]}/topics/{topic}", json="from the first node")
        assert answer.status_code == 202
        assert [e.json() for e in await stream.events(1)] == ["from the first node"]
        await stream.aclose()


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    return err


async def test_broker_cluster_nodes_3_engine_redis_by_flags(redis_server: RedisServer, key_prefix):
    port = consecutive_free(3)
    proc = launch(
        "--nodes", "3", "--port", str(port), "--config", os.devnull,
        "--engine", "redis", "--redis-url", redis_server.url,
        BROKER_CLUSTER_REDIS_KEY_PREFIX=key_prefix,
    )  # fmt: skip
    try:
        urls = [f"http://127.0.0.1:{port + i}" for i in range(3)]
        for url in urls:
            info = await wait_on_redis(url)
            assert info["engine"] == "redis"
            assert info["redis"] == redis_server.url
        await publish_and_receive(urls, "c")
    finally:
        err = stop(proc)
    assert f"broker: redis engine at {redis_server.url}" in err
    assert "peer link" not in err  # no mesh was started


async def test_broker_cluster_honours_the_config_file_engine(
    redis_server: RedisServer, key_prefix, tmp_path
):
    config = tmp_path / "config.toml"
    config.write_text(
        '[cluster]\nengine = "redis"\n'  # enabled = false: `broker cluster` turns it on
        f'redis_url = "{redis_server.url}"\nredis_key_prefix = "{key_prefix}"\n'
    )
    port = consecutive_free(2)
    proc = launch("--nodes", "2", "--port", str(port), "--config", str(config))
    try:
        urls = [f"http://127.0.0.1:{port + i}" for i in range(2)]
        for url in urls:
            assert (await wait_on_redis(url))["engine"] == "redis"
        await publish_and_receive(urls, "f")
    finally:
        stop(proc)


def test_broker_cluster_refuses_a_bad_redis_url_before_starting_anything():
    done = subprocess.run(
        [sys.executable, "-m", "broker", "cluster", "--config", os.devnull,
         "--engine", "redis", "--redis-url", "mysql://db"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("broker: ")
    assert "[cluster] redis_url: unknown scheme 'mysql'" in line
