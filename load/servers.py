"""The servers under test: our broker (started here or already running) and nginx + nchan.

Each server object knows how to start and stop itself, which loopback port it serves, which
processes to charge CPU and memory to, and the request targets for subscribe and publish. Every
start has a timeout; every stop ends with SIGKILL of the process group if a polite stop fails.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from .tools import BenchError, ProcessRegistry, descendants, free_port, wait_port

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
NCHAN_MODULE: Final = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
LISTENING_RE: Final = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT_S: Final = 30.0
LOOPBACK: Final = ("127.0.0.1", "localhost", "::1")


class Server:
    """Interface shared by the servers (see the module docstring)."""

    name = "server"
    label = "server"
    host = "127.0.0.1"
    port = 0
    batch_path: str | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return []

    def sub_path(self, topic: str) -> str:
        raise NotImplementedError

    def pub_path(self, topic: str) -> str:
        raise NotImplementedError

    def stats(self) -> dict[str, Any] | None:
        return None


def _python() -> str:
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _get_json(port: int, path: str, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """GET a JSON document from 127.0.0.1 (no proxy: http.client connects directly)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read(1 << 20)
        if resp.status != 200:
            return None
        data = json.loads(body)
        return data if isinstance(data, dict) else {"value": data}
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _stop_gracefully(
    proc: subprocess.Popen[bytes] | None,
    registry: ProcessRegistry,
    interrupt: Callable[[int, int], None],
    wait_s: float,
) -> None:
    """SIGINT first (the broker's graceful path), then SIGTERM/SIGKILL via the registry."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            interrupt(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
    registry.kill(proc, signal.SIGTERM, grace_s=3.0)


class _BrokerRoutes:
    """The broker's publish and subscribe paths (one node or a cluster)."""

    def sub_path(self, topic: str) -> str:
        return f"/topics/{topic}/events"

    def pub_path(self, topic: str) -> str:
        return f"/topics/{topic}"


class BrokerServer(_BrokerRoutes, Server):
    """``python -m broker run --port 0 --host 127.0.0.1``, started fresh by :meth:`start`."""

    name = "broker"
    label = "broker"
    batch_path = "/publish"

    def __init__(
        self,
        registry: ProcessRegistry,
        log_dir: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._registry = registry
        self._log_dir = log_dir
        self._extra = extra_args or []
        self._env = env or {}
        self._proc: subprocess.Popen[Any] | None = None
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        log = self._log_dir / f"broker-{self._starts}.log"
        argv = [
            _python(),
            "-m",
            "broker",
            "run",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            *self._extra,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self._env)
        with open(log, "wb") as f:
            self._proc = self._registry.popen(
                argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            m = LISTENING_RE.search(text)
            if m:
                self.port = int(m.group(1))
                return
            if self._proc.poll() is not None:
                raise BenchError(f"broker exited with {self._proc.returncode}: {text[-800:]}")
            time.sleep(0.05)
        self.stop()
        raise BenchError(
            f"broker did not print 'listening on' within {START_TIMEOUT_S:.0f} s (log: {log})"
        )

    def stop(self) -> None:
        _stop_gracefully(self._proc, self._registry, os.kill, 5)
        self._proc = None

    def pids(self) -> list[int]:
        return descendants(self._proc.pid) if self._proc else []

    def stats(self) -> dict[str, Any] | None:
        return _get_json(self.port, "/stats")


class ExternalBroker(BrokerServer):
    """A broker that is already running (``--broker-url``); CPU/RSS only with ``--broker-pid``."""

    def __init__(self, url: str, pid: int | None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK or not parts.port:
            raise BenchError(
                f"--broker-url must be http://127.0.0.1:PORT (loopback only), got {url!r}"
            )
        self.port = parts.port
        self._pid = pid

    def start(self) -> None:
        if not wait_port(self.port, 5.0):
            raise BenchError(f"nothing listens on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        pass

    def pids(self) -> list[int]:
        return descendants(self._pid) if self._pid else []


def _free_port_block(count: int) -> int:
    """A base port such that base .. base+count-1 are free (below the ephemeral range)."""
    import random
    import socket

    for _ in range(200):
        base = random.randint(20000, 30000 - count)
        socks = []
        try:
            for p in range(base, base + count):
                sk = socket.socket()
                socks.append(sk)
                sk.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for sk in socks:
                sk.close()
    raise BenchError(f"no block of {count} free ports")


class ClusterBroker(_BrokerRoutes, Server):
    """``python -m broker cluster --nodes N`` on consecutive loopback ports.

    ``engine="mesh"``: ready when every node printed ``listening on`` and every peer link is up
    (N x (N-1) ``linked to`` lines). ``engine="redis"``: the bench also starts a private
    ``redis-server`` (persistence off) that the nodes share; its CPU counts as the server's.
    """

    batch_path = "/publish"

    def __init__(
        self, registry: ProcessRegistry, log_dir: Path, nodes: int, engine: str = "mesh"
    ) -> None:
        self._registry = registry
        self._log_dir = log_dir
        self.nodes = nodes
        self.engine = engine
        self.name = "broker" if engine == "mesh" else f"broker-{engine}"
        self.label = "broker cluster" if engine == "mesh" else f"broker cluster on {engine}"
        self.ports: list[int] = []
        self._proc: subprocess.Popen[Any] | None = None
        self._redis: subprocess.Popen[Any] | None = None
        self._starts = 0

    def _start_redis(self) -> str:
        port = free_port()
        log = self._log_dir / f"redis-{self._starts}.log"
        with open(log, "wb") as f:
            self._redis = self._registry.popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        if not wait_port(port, START_TIMEOUT_S):
            raise BenchError(f"redis-server did not listen on {port} (log: {log})")
        return f"redis://127.0.0.1:{port}"

    def start(self) -> None:
        self._starts += 1
        log = self._log_dir / f"cluster-{self.engine}-{self._starts}.log"
        base = _free_port_block(2 * self.nodes + 10)
        argv = [
            _python(),
            "-m",
            "broker",
            "cluster",
            "--nodes",
            str(self.nodes),
            "--host",
            "127.0.0.1",
            "--port",
            str(base),
            "--peer-port",
            str(base + self.nodes + 5),
            "--engine",
            self.engine,
        ]
        if self.engine == "redis":
            argv += ["--redis-url", self._start_redis()]
        links = self.nodes * (self.nodes - 1) if self.engine == "mesh" else 0
        env = dict(os.environ, PYTHONUNBUFFERED="1", BROKER_STORAGE_KIND="memory")
        with open(log, "wb") as f:
            self._proc = self._registry.popen(
                argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            ports = sorted({int(p) for p in LISTENING_RE.findall(text)})
            if len(ports) >= self.nodes and text.count("linked to") >= links:
                self.ports = ports[: self.nodes]
                self.port = self.ports[0]
                return
            if self._proc.poll() is not None:
                raise BenchError(
                    f"broker cluster exited with {self._proc.returncode}: {text[-800:]}"
                )
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"broker cluster not ready within {START_TIMEOUT_S:.0f} s (log: {log})")

    def stop(self) -> None:
        _stop_gracefully(self._proc, self._registry, os.killpg, 8)
        self._proc = None
        if self._redis is not None:
            self._registry.kill(self._redis, signal.SIGTERM, grace_s=3.0)
            self._redis = None

    def pids(self) -> list[int]:
        pids = descendants(self._proc.pid) if self._proc else []
        return pids + ([self._redis.pid] if self._redis else [])


NGINX_CONF: Final = """\
# generated by load/bench.py: nginx + nchan on loopback, one worker
load_module {module};
{user}worker_processes 1;
worker_rlimit_nofile {nofile};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/client_body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location ~ ^/pub/(.+)$ {{
      nchan_publisher;
      nchan_channel_id $1;
      nchan_message_buffer_length 1000;
    }}
    location ~ ^/sub/(.+)$ {{
      nchan_subscriber eventsource;
      nchan_channel_id $1;
      nchan_message_buffer_length 1000;
      nchan_subscriber_first_message newest;
    }}
  }}
}}
"""


def nchan_available() -> str | None:
    """None if nginx and the nchan module are installed, else why not."""
    if not shutil.which("nginx"):
        return "nginx is not installed"
    if not NCHAN_MODULE.exists():
        return f"{NCHAN_MODULE} is missing (apt install libnginx-mod-nchan)"
    return None


class NchanServer(Server):
    """nginx + nchan with a generated config in a temporary directory."""

    name = "nchan"
    label = "nginx+nchan"

    def __init__(self, registry: ProcessRegistry, log_dir: Path) -> None:
        self._registry = registry
        self._log_dir = log_dir
        self._proc: subprocess.Popen[Any] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-nchan-")
        tmp = self._tmp.name
        self.port = free_port()
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        conf = NGINX_CONF.format(
            module=NCHAN_MODULE,
            user="user root;\n" if os.geteuid() == 0 else "",
            nofile=nofile,
            worker_connections=max(1024, nofile - 256),
            tmp=tmp,
            port=self.port,
        )
        Path(tmp, "nginx.conf").write_text(conf)
        log = self._log_dir / f"nginx-{self._starts}.log"
        with open(log, "wb") as f:
            self._proc = self._registry.popen(
                ["nginx", "-p", tmp, "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        if not wait_port(self.port, START_TIMEOUT_S):
            err = (
                Path(tmp, "error.log").read_text(errors="replace")
                if Path(tmp, "error.log").exists()
                else ""
            )
            self.stop()
            raise BenchError(
                f"nginx did not listen on {self.port}: {log.read_text(errors='replace')} {err}"
            )
        # wait for the worker process (it accepts the connections)
        deadline = time.monotonic() + 5
        while len(self.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None:
            self._registry.kill(self._proc, signal.SIGTERM, grace_s=5.0)
            self._proc = None
        if self._tmp is not None:
            err = Path(self._tmp.name, "error.log")
            if err.exists():
                with contextlib.suppress(OSError):
                    shutil.copy(err, self._log_dir / f"nginx-error-{self._starts}.log")
            self._tmp.cleanup()
            self._tmp = None

    def pids(self) -> list[int]:
        return descendants(self._proc.pid) if self._proc else []

    def stats(self) -> dict[str, Any] | None:
        """nchan skips messages for a subscriber that fell more than the buffer behind and only
        logs it ("Missed message for eventsource subscriber"): count those warnings (gaps)."""
        if self._tmp is None:
            return None
        try:
            text = Path(self._tmp.name, "error.log").read_text(errors="replace")
        except OSError:
            return None
        return {"dropped_gaps_logged": text.count("Missed message")}

    def sub_path(self, topic: str) -> str:
        return f"/sub/{topic}"

    def pub_path(self, topic: str) -> str:
        return f"/pub/{topic}"


def broker_cli_help(timeout_s: float = 20.0) -> str:
    """The text of ``python -m broker --help``, ``run --help`` and ``cluster --help``."""
    out = []
    for args in (["--help"], ["run", "--help"], ["cluster", "--help"]):
        try:
            r = subprocess.run(
                [_python(), "-m", "broker", *args],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
            out.append(r.stdout + r.stderr)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "\n".join(out)
