"""Real brokers for tests: in-process (same trio run) or as a separate process."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from broker.config import Settings
from broker.server import RunningServer, serve

ROOT = Path(__file__).resolve().parents[2]

#: Settings for tests: any free port, short shutdown grace, memory storage (the durable
#: store's own tests, tests/durable/, give each broker a data directory of its own).
TEST_SETTINGS = Settings().replace(
    server={"port": 0}, shutdown={"grace_seconds": 0.5}, storage={"kind": "memory"}
)


@asynccontextmanager
async def open_broker_server(**tables: Mapping[str, Any]) -> AsyncIterator[RunningServer]:
    """Run a real broker on an ephemeral loopback port inside the current trio run.

    Keyword arguments change settings per table: ``open_broker_server(stream={"queue_events":
    4})``. The yielded object has ``.url``, ``.port``, ``.hub``, ``.dataplane``. On exit the
    server shuts down gracefully and everything it started has ended.
    """
    settings = TEST_SETTINGS.replace(**tables) if tables else TEST_SETTINGS
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(serve, settings)
        try:
            yield server
        finally:
            server.request_shutdown()


_LISTENING = re.compile(r"listening on (http://\S+)")


class BrokerProcess:
    """A real ``python -m broker run`` process.

    Args:
        port: the port to bind; 0 picks a free one at the first start and keeps it for
            restarts.
        env: extra environment (``BROKER_*`` settings).
        args: extra ``broker run`` arguments.
        open_files: the process's limit of open files (soft and hard), as ``ulimit -n``.
    """

    def __init__(
        self,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
        open_files: int | None = None,
    ) -> None:
        self.open_files = open_files
        self.port = port
        self.env = dict(env or {})
        self.args = list(args or [])
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log: list[str] = []

    def start(self, timeout: float = 20.0) -> str:
        """Start the process and wait until it listens; return its URL."""
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BROKER_SHUTDOWN_GRACE_SECONDS": "0.5",
            "BROKER_STORAGE_KIND": "memory",  # durable tests set a data directory
            **self.env,
        }
        cmd = [
            sys.executable,
            "-m",
            "broker",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        limit = self.open_files

        def set_limit() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=set_limit if limit is not None else None,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"broker exited: {''.join(self.log)}")
            self.log.append(line)
            found = _LISTENING.search(line)
            if found:
                self.url = found.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                # Keep draining stderr so the process never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return self.url
        raise RuntimeError("broker did not start in time")

    def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the process and wait for it; return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> str:
        """Stop (SIGTERM) and start again on the same port."""
        self.stop()
        return self.start()

    async def astart(self) -> str:
        return await trio.to_thread.run_sync(self.start)

    async def astop(self, sig: int = signal.SIGTERM) -> int:
        return await trio.to_thread.run_sync(self.stop, sig)

    async def arestart(self) -> str:
        return await trio.to_thread.run_sync(self.restart)

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


CLUSTER_TEST = {
    "enabled": True,
    "port": 0,
    "secret": "test-secret",
    "heartbeat_seconds": 0.1,
    "down_after_seconds": 1.0,
    "holdback_seconds": 0.5,
    "catchup_seconds": 3.0,
    "backoff_max_seconds": 0.5,
}


def cluster_tables(node_id: str, seeds: list[str], **tables: Mapping[str, Any]) -> dict[str, Any]:
    """Settings tables for one in-process cluster node."""
    cluster = {
        **CLUSTER_TEST,
        "node_id": node_id,
        "seeds": tuple(seeds),
        **tables.pop("cluster", {}),
    }
    return {"cluster": cluster, **tables}


async def start_node(
    nursery: trio.Nursery, node_id: str, seeds: list[str], **tables: Any
) -> RunningServer:
    """Start one cluster node in ``nursery``; stop it with ``server.request_shutdown()``."""
    settings = TEST_SETTINGS.replace(**cluster_tables(node_id, seeds, **tables))
    return await nursery.start(serve, settings)


async def wait_linked(servers: list[RunningServer], timeout: float = 10) -> None:
    """Wait until every node has a link to every other."""
    with trio.fail_after(timeout):
        while not all(
            len(s.cluster.links) == len(servers) - 1 for s in servers if s.cluster is not None
        ):
            await trio.sleep(0.02)
