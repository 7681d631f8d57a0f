"""Real ``redis-server`` processes for the Redis engine tests (Debian's, on free ports).

Every test that needs Redis is skipped with one clear reason when ``redis-server`` is not
installed; nothing else is.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certificates import Certificates

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")

needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None,
    reason="redis-server and redis-cli are not installed (Debian package redis-server)",
)


def free_port(*, bus: bool = False) -> int:
    """A free port; with ``bus``, one whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a condition of an outside process (sync fixtures only)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


class RedisServer:
    """One ``redis-server`` on a free port; :meth:`kill` and :meth:`start` it at will.

    Args:
        directory: its working directory (AOF files live there).
        persistent: keep an append-only file fsynced on every write, so a restart keeps
            every event Redis acknowledged; otherwise Redis restarts empty.
        extra: more ``redis-server`` arguments.
        bus: pick a port whose cluster bus port (+10000) is free too.
    """

    def __init__(
        self,
        directory: Path,
        *,
        persistent: bool = False,
        extra: list[str] | None = None,
        bus: bool = False,
    ):
        self.directory = directory
        self.bus = bus
        self.port = free_port(bus=bus)
        self.persistent = persistent
        self.extra = list(extra or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_once = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart on the same port); a first start retries on another port
        if the one picked was taken meanwhile."""
        assert REDIS_SERVER is not None
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        for _attempt in range(5):
            log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    *self.listen_args(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--dir",
                    str(self.directory),
                    *persistence,
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            proc = self.proc
            wait_until(
                lambda proc=proc: proc.poll() is not None or self.ready(),
                what=f"redis-server on {self.port}",
            )
            if proc.poll() is None:
                self.started_once = True
                return
            if self.started_once:
                break
            self.port = free_port(bus=self.bus)
        log_text = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server did not start on {self.port}:\n{log_text}")

    def listen_args(self) -> list[str]:
        return ["--port", str(self.port)]

    def ready(self) -> bool:
        return answers(self.port)

    def kill(self) -> None:
        """SIGKILL (a stopped process too): what it had not acknowledged never happens."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: a hung Redis that still holds its connections open."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cli(self, *args: str) -> str:
        assert REDIS_CLI is not None
        return subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args], capture_output=True, text=True, check=True
        ).stdout


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh single Redis (no persistence): ``--save '' --appendonly no``."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A single Redis that keeps every acknowledged write across a restart (AOF, fsync)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class TlsRedisServer(RedisServer):
    """A Redis that speaks TLS only (``--port 0 --tls-port``), with a throwaway CA.

    It asks clients for a certificate (Redis's default, ``tls-auth-clients yes``);
    ``certificates`` has the CA, the server's and a client's certificate files.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.certificates = Certificates.create(directory)

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def listen_args(self) -> list[str]:
        files = self.certificates
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", files.server_cert,
            "--tls-key-file", files.server_key,
            "--tls-ca-cert-file", files.ca,
        ]  # fmt: skip

    def ready(self) -> bool:
        files = self.certificates
        context = ssl.create_default_context(cafile=files.ca)
        context.load_cert_chain(files.client_cert, files.client_key)
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
            ):
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedisServer]:
    """A single Redis on TLS only, verifying client certificates."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = TlsRedisServer(tmp_path)
    try:
        server.start()
    except RuntimeError as exc:  # built without TLS: say so rather than fail
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server cannot serve TLS: {exc}")
        raise
    try:
        yield server
    finally:
        server.kill()


class RedisCluster:
    """Three masters with no replicas: ``redis-server --cluster-enabled yes`` x3."""

    def __init__(self, directory: Path) -> None:
        self.nodes = []
        for i in range(3):
            node_dir = directory / f"node{i}"
            node_dir.mkdir()
            self.nodes.append(
                RedisServer(
                    node_dir,
                    persistent=True,
                    extra=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        # The live masters keep serving their slots while one is down
                        # (by default Redis refuses every slot then: CLUSTERDOWN).
                        "--cluster-require-full-coverage",
                        "no",
                    ],
                    bus=True,  # the cluster bus listens on port + 10000
                )
            )

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        assert REDIS_CLI is not None
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=30,
        )
        self.wait_ok()

    def wait_ok(self) -> None:
        wait_until(
            lambda: all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes),
            timeout=20,
            what="cluster_state:ok on every node",
        )

    def node_for(self, topic: str) -> RedisServer:
        """The master that holds ``topic``'s slot (its keys carry the tag ``{topic}``)."""
        slot = int(self.nodes[0].cli("cluster", "keyslot", topic).strip())
        for line in self.nodes[0].cli("cluster", "nodes").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master holds slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A local 3-master Redis Cluster, shared by a module's tests (each uses its own prefix)."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server and redis-cli are not installed (Debian package redis-server)")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix of its own for each test, so tests sharing a Redis never meet."""
    return f"t{uuid.uuid4().hex[:10]}"


class SentinelGroup:
    """A primary, one replica and one Sentinel (quorum 1) that fails over in about 2 s.

    The Sentinel marks the primary down after ``down_after_ms`` without an answer and
    promotes the replica; ``url`` is the ``redis+sentinel://`` URL of the service.
    """

    SERVICE = "primary"

    def __init__(self, directory: Path, *, down_after_ms: int = 500) -> None:
        self.directory = directory
        self.down_after_ms = down_after_ms
        (directory / "primary").mkdir()
        (directory / "replica").mkdir()
        # A replica syncs at once (diskless sync would wait 5 s for more replicas).
        self.primary = RedisServer(
            directory / "primary", persistent=True, extra=["--repl-diskless-sync-delay", "0"]
        )
        self.replica: RedisServer | None = None
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.SERVICE}"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.primary.start()
        self.replica = RedisServer(
            self.directory / "replica",
            persistent=True,
            extra=["--replicaof", "127.0.0.1", str(self.primary.port)],
        )
        self.replica.start()
        wait_until(
            lambda: "master_link_status:up" in self.replica.cli("info", "replication"),
            what="the replica in sync",
        )
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.SERVICE} 5000\n"
        )
        log = open(self.directory / "sentinel.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [REDIS_SERVER, str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_until(lambda: answers(self.port), what="sentinel")
        replica = f"127.0.0.1:{self.replica.port}"
        wait_until(  # its "name" is host:port
            lambda: replica in self.sentinel("sentinel", "replicas", self.SERVICE),
            what="the sentinel knowing the replica",
        )

    def sentinel(self, *args: str) -> str:
        assert REDIS_CLI is not None
        return subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args], capture_output=True, text=True, check=True
        ).stdout

    def primary_port(self) -> int:
        """The port the Sentinel names as the primary now."""
        lines = self.sentinel("sentinel", "get-master-addr-by-name", self.SERVICE).split()
        return int(lines[1])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for server in (self.primary, self.replica):
            if server is not None:
                server.kill()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary + replica watched by one Sentinel, ready to fail over."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server and redis-cli are not installed (Debian package redis-server)")
    group = SentinelGroup(tmp_path)
    try:
        group.start()
        yield group
    finally:
        group.stop()
