"""`broker cluster --nodes 3` and `broker run --workers 2` as real processes."""

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
import trio

from tests.support.servers import ROOT
from tests.support.sse_client import open_sse


def free_ports(count):
    ports = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + count < 65000:
            ports.append(port)
    return ports


def consecutive_free(count):
    while True:
        (base,) = free_ports(1)
        try:
            socks = []
            for offset in range(count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", base + offset))
                socks.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()


async def wait_healthy(url, timeout=20):
    with trio.fail_after(timeout):
        while True:
            try:
                async with httpx.AsyncClient(base_url=url) as client:
                    stats = (await client.get("/stats")).json()
                    if (
                        all(p["state"] == "up" for p in stats["cluster"]["peers"])
                        and len(stats["cluster"]["peers"]) >= 1
                    ):
                        return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.1)


def launch(*args, **extra_env):
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "BROKER_CLUSTER_HEARTBEAT_SECONDS": "0.2",
        "BROKER_STORAGE_KIND": "memory",  # no ./data/<node> in the checkout
        **extra_env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "broker", *args], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )


@pytest.mark.slow
async def test_broker_cluster_nodes_3():
    port, peer = consecutive_free(3), consecutive_free(3)
    proc = launch("cluster", "--nodes", "3", "--port", str(port), "--peer-port", str(peer))
    try:
        urls = [f"http://127.0.0.1:{port + i}" for i in range(3)]
        for url in urls:
            await wait_healthy(url)
        with trio.fail_after(20):
            stream = await open_sse(urls[2], "/topics/c/events")
            await stream.next_event()
            async with httpx.AsyncClient() as client:
                await client.post(urls[0] + "/topics/c", json="from node 1")
            assert (await stream.events(1))[0].json() == "from node 1"
            await stream.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.slow
async def test_broker_run_workers_share_one_port():
    (port,) = free_ports(1)
    peer = consecutive_free(2)
    proc = launch(
        "run",
        "--workers",
        "2",
        "--port",
        str(port),
        "--config",
        str(ROOT / "config.toml"),
        BROKER_CLUSTER_PORT=str(peer),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url)
        with trio.fail_after(20):  # until both workers answer on the shared port
            seen = set()
            while seen != {"w1", "w2"}:
                async with httpx.AsyncClient() as fresh:
                    stats = (await fresh.get(url + "/stats")).json()
                if all(p["state"] == "up" for p in stats["cluster"]["peers"]):
                    seen.add(stats["cluster"]["node"])
        with trio.fail_after(30):
            streams = [await open_sse(url, "/topics/w/events") for _ in range(6)]
            for stream in streams:
                await stream.next_event()
            for n in range(20):
                async with httpx.AsyncClient() as fresh:  # a new connection, any worker
                    assert (await fresh.post(url + "/topics/w", json=n)).status_code == 202
            # whichever worker took a publish or a stream, every stream gets every event
            for stream in streams:
                assert sorted(e.json() for e in await stream.events(20)) == list(range(20))
                await stream.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
