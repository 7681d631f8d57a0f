"""Several broker processes joined as one cluster: ``broker cluster`` and ``--workers``.

A Python process serves from one core. ``broker run --workers N`` starts N worker processes
that all bind the public port with ``SO_REUSEPORT`` (the kernel spreads connections over
them) and replicate to each other over the peer link on loopback, so a client may land on
any worker and still receive every event and resume exactly. ``broker cluster --nodes N``
starts N nodes on consecutive ports (a local cluster to try the cluster on one machine).

Either runs on the cluster engine the settings name (``[cluster] engine``, then
``BROKER_CLUSTER_ENGINE``, then ``broker cluster --engine``): on the mesh the children get
peer ports, seeds and a shared secret; on Redis they only share ``redis_url`` (from the
same settings, or ``--redis-url``) and need no peer link at all.

The supervisor owns the children: SIGINT/SIGTERM is passed on to every child and waited
for; a worker that dies is restarted (with a new origin, so its ids are never reused).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field


@dataclass
class Child:
    name: str
    env: dict[str, str]
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = field(default=0.0)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker", "run", *self.args], env={**os.environ, **self.env}
        )
        self.started = time.monotonic()


def cluster_secret() -> str:
    """The mesh's shared secret: ``BROKER_CLUSTER_SECRET``, or a fresh one for this run."""
    return os.environ.get("BROKER_CLUSTER_SECRET") or secrets.token_urlsafe(24)


def _children(
    count: int,
    *,
    host: str,
    port: int,
    peer_port: int,
    shared_port: bool,
    config: str | None,
    engine: str,
    redis_url: str | None,
) -> list[Child]:
    secret = cluster_secret() if engine == "mesh" else ""
    peers = [f"127.0.0.1:{peer_port + i}" for i in range(count)]
    children = []
    for i in range(count):
        name = f"w{i + 1}" if shared_port else f"n{i + 1}"
        env = {
            "BROKER_SERVER_HOST": host,
            "BROKER_SERVER_PORT": str(port if shared_port else port + i),
            "BROKER_SERVER_REUSE_PORT": "true" if shared_port else "false",
            "BROKER_CLUSTER_ENABLED": "true",
            "BROKER_CLUSTER_ENGINE": engine,
            "BROKER_CLUSTER_NODE_ID": name,
        }
        if engine == "mesh":
            env |= {
                "BROKER_CLUSTER_HOST": "127.0.0.1",
                "BROKER_CLUSTER_PORT": str(peer_port + i),
                "BROKER_CLUSTER_SEEDS": ",".join(p for j, p in enumerate(peers) if j != i),
                "BROKER_CLUSTER_SECRET": secret,
            }
        elif redis_url is not None:  # --redis-url: over the config file and environment
            env["BROKER_CLUSTER_REDIS_URL"] = redis_url
        args = ["--config", config] if config else []
        children.append(Child(name, env, args))
    return children


def supervise(
    count: int,
    *,
    host: str,
    port: int,
    peer_port: int,
    shared_port: bool,
    config: str | None = None,
    engine: str = "mesh",
    redis_url: str | None = None,
    where: str = "",
) -> int:
    """Run ``count`` broker processes as one cluster until SIGINT/SIGTERM; return 0.

    Args:
        engine: ``mesh`` or ``redis`` (the settings' ``[cluster] engine``).
        redis_url: given to every child over its own settings (``--redis-url``).
        where: how to name the engine's store in the start lines (a redacted URL).
    """
    children = _children(
        count,
        host=host,
        port=port,
        peer_port=peer_port,
        shared_port=shared_port,
        config=config,
        engine=engine,
        redis_url=redis_url,
    )
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.start()
    if engine != "mesh":
        print(f"broker: {engine} engine at {where}", file=sys.stderr, flush=True)
    if shared_port:
        print(f"broker: {count} workers on http://{host}:{port}", file=sys.stderr, flush=True)
    else:
        for i, child in enumerate(children):
            print(
                f"broker: node {child.name} on http://{host}:{port + i}",
                file=sys.stderr,
                flush=True,
            )
    while not stopping:
        time.sleep(0.2)
        for child in children:
            assert child.proc is not None
            code = child.proc.poll()
            if code is not None and not stopping:
                child.restarts += 1
                delay = min(10.0, 0.5 * 2 ** min(child.restarts, 5))
                print(
                    f"broker: {child.name} exited with {code}; restarting in {delay:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(delay)
                child.start()
    for child in children:
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in children:
        if child.proc is not None:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
    return 0
