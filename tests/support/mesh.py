"""A mesh of real ``broker run`` processes on fixed ports, for fault tests (kill, stop)."""

from __future__ import annotations

import signal
import socket

import httpx
import trio

from broker.core import positions

from .servers import BrokerProcess

SECRET = "mesh-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mesh:
    """``count`` broker processes that know each other's peer ports.

    Args:
        count: how many nodes.
        **settings: extra ``[cluster]`` settings (``heartbeat_seconds="0.2"``).
    """

    def __init__(self, count: int, history_size: int = 1000, **settings: str) -> None:
        self.names = [chr(ord("a") + i) for i in range(count)]
        peer_ports = [free_port() for _ in range(count)]
        self.nodes: list[BrokerProcess] = []
        self.stopped: set[int] = set()
        for i, name in enumerate(self.names):
            seeds = ",".join(f"127.0.0.1:{p}" for k, p in enumerate(peer_ports) if k != i)
            env = {
                "BROKER_CLUSTER_ENABLED": "true",
                "BROKER_CLUSTER_NODE_ID": name,
                "BROKER_CLUSTER_PORT": str(peer_ports[i]),
                "BROKER_CLUSTER_SEEDS": seeds,
                "BROKER_CLUSTER_SECRET": SECRET,
                "BROKER_CLUSTER_HEARTBEAT_SECONDS": "0.2",
                "BROKER_CLUSTER_DOWN_AFTER_SECONDS": "2",
                "BROKER_CLUSTER_HOLDBACK_SECONDS": "1",
                "BROKER_CLUSTER_BACKOFF_MAX_SECONDS": "0.5",
                "BROKER_HISTORY_SIZE": str(history_size),
                "BROKER_LOG_LEVEL": "warning",
                **{f"BROKER_CLUSTER_{k.upper()}": v for k, v in settings.items()},
            }
            self.nodes.append(BrokerProcess(env=env))

    async def start(self) -> None:
        for node in self.nodes:
            await node.astart()
        await self.wait_linked()

    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    async def stats(self, i: int, timeout: float = 2.0) -> dict | None:
        try:
            with trio.fail_after(timeout):
                async with httpx.AsyncClient(base_url=self.nodes[i].url) as client:
                    return (await client.get("/stats")).json()
        except (httpx.HTTPError, trio.TooSlowError):
            return None

    def live(self) -> list[int]:
        return [
            i
            for i, n in enumerate(self.nodes)
            if n.proc is not None and n.proc.poll() is None and i not in self.stopped
        ]

    async def wait_linked(self, timeout: float = 20) -> None:
        """Until every live node has every other live node up."""
        with trio.fail_after(timeout):
            while True:
                live = self.live()
                ok = True
                for i in live:
                    stats = await self.stats(i)
                    up = (
                        set()
                        if stats is None
                        else {p["node"] for p in stats["cluster"]["peers"] if p["state"] == "up"}
                    )
                    ok = ok and {self.names[k] for k in live if k != i} <= up
                if ok:
                    return
                await trio.sleep(0.1)

    async def wait_converged(self, timeout: float = 20) -> None:
        """Until every live node has delivered the same events of every origin."""
        with trio.fail_after(timeout):
            while True:
                vectors = []
                for i in self.live():
                    stats = await self.stats(i)
                    if stats is None:
                        break
                    vector = positions.parse_position(stats["position"])
                    vectors.append({o: s for o, s in vector.items() if s})
                else:
                    if all(v == vectors[0] for v in vectors):
                        return
                await trio.sleep(0.1)

    async def vectors(self) -> list[dict[str, int]] | None:
        vectors = []
        for i in self.live():
            stats = await self.stats(i)
            if stats is None:
                return None
            vectors.append(positions.parse_position(stats["position"]))
        return vectors

    async def wait_caught_up(self, timeout: float = 20) -> None:
        """Until every live node has delivered what any of them had when this began.

        Unlike :meth:`wait_converged` this ends while events are still being published.
        """
        with trio.fail_after(timeout):
            while (vectors := await self.vectors()) is None:
                await trio.sleep(0.1)
            target: dict[str, int] = {}
            for vector in vectors:
                for origin, seq in vector.items():
                    target[origin] = max(seq, target.get(origin, 0))
            while True:
                vectors = await self.vectors()
                if vectors is not None and all(
                    v.get(o, 0) >= s for v in vectors for o, s in target.items()
                ):
                    return
                await trio.sleep(0.1)

    def kill(self, i: int) -> None:
        self.nodes[i].stop(signal.SIGKILL)

    async def restart(self, i: int) -> None:
        await self.nodes[i].astart()

    def pause(self, i: int) -> None:
        self.stopped.add(i)
        assert self.nodes[i].proc is not None
        self.nodes[i].proc.send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        assert self.nodes[i].proc is not None
        self.nodes[i].proc.send_signal(signal.SIGCONT)
        self.stopped.discard(i)

    def close(self) -> None:
        for i in list(self.stopped):
            self.resume(i)
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(10)
