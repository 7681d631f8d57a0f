"""Slowloris against a broker with ``ulimit -n 1024``, a good client polled meanwhile (issue 17).

    .venv/bin/python -m load.slowloris                      # 1 100 sockets, 30 s, one address
    .venv/bin/python -m load.slowloris --per-ip 100 --good-source 127.0.0.2
    .venv/bin/python -m load.slowloris --root /path/to/other/checkout   # e.g. a baseline

What runs: a fresh ``python -m broker run`` on a free loopback port with RLIMIT_NOFILE soft =
hard = ``--open-files``; an attacker process (its own fd limit raised) that keeps ``--sockets``
connections open, each sending a request line and then one header line every ``--line-every``
seconds, never finishing its head, and reconnecting (after ``--reconnect-after`` s) whenever the
broker closes it; and, in this process, a good client that opens a new connection every
``--poll-every`` seconds for ``--seconds`` and publishes one event (a ``POST`` answered ``202``).

Printed: one JSON object with the good client's latencies (worst, median, p99), its failures
(no 202 within ``--timeout`` s, or an error), the attacker's connections and how many the
broker closed, the broker's CPU seconds and its own counters from ``/metrics``.
Loopback only; every process started is killed at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PUBLISH = (
    b"POST /topics/good HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
)


def _limit_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def start_broker(root: Path, open_files: int, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "run", "--host", "127.0.0.1", "--port", "0"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _limit_files(open_files),
        start_new_session=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit("broker exited before listening")
        if "listening on http://" in line:
            port = int(line.rsplit(":", 1)[1].split()[0])
            return proc, port
    raise SystemExit("broker did not start")


def attack(port: int, sockets: int, line_every: float, reconnect_after: float, stats: Any) -> None:
    """The attacker process: ``sockets`` slowloris connections until terminated."""
    import trio
    import trio.lowlevel

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def one() -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(reconnect_after)
                continue
            with stats.get_lock():
                stats[0] += 1
            async with stream, trio.open_nursery() as nursery:

                async def trickle(stream: trio.SocketStream = stream) -> None:
                    await stream.send_all(b"GET /topics/t/events HTTP/1.1\r\n")
                    while True:
                        await trio.sleep(line_every)
                        await stream.send_all(b"X-Slow: 1\r\n")

                nursery.start_soon(trickle)
                try:
                    while await stream.receive_some(4096):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()
            with stats.get_lock():
                stats[1] += 1
            await trio.sleep(reconnect_after)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(sockets):
                nursery.start_soon(one)
                await trio.lowlevel.checkpoint()

    trio.run(main)


def good_request(port: int, source: str, timeout: float) -> float | str:
    """Seconds to a 202 on a new connection, or why it failed."""
    started = time.monotonic()
    try:
        sock = socket.socket()
        sock.settimeout(timeout)
        try:
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(PUBLISH)
            answer = b""
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    return "closed without an answer"
                answer += chunk
        finally:
            sock.close()
    except OSError as exc:
        return repr(exc)
    if not answer.startswith(b"HTTP/1.1 202 "):
        return answer.split(b"\r\n", 1)[0].decode("latin-1")
    return time.monotonic() - started


def broker_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int, timeout: float) -> dict[str, float]:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
            head, body = answer.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n")[0])
            while len(body) < length:
                body += sock.recv(65536)
    except (OSError, IndexError, ValueError):
        return {}
    values = {}
    for line in body.decode().splitlines():
        if line.startswith(("broker_accept", "broker_request_timeouts", "broker_connections_")):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1100)
    parser.add_argument("--open-files", type=int, default=1024)
    parser.add_argument("--line-every", type=float, default=10.0)
    parser.add_argument("--reconnect-after", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--poll-every", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--per-ip", type=int, default=0, help="[limits] max_connections_per_ip")
    parser.add_argument("--good-source", default="127.0.0.1", help="the good client's address")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run")
    args = parser.parse_args()
    env = {"BROKER_LIMITS_MAX_CONNECTIONS_PER_IP": str(args.per_ip), "BROKER_LOG_LEVEL": "warning"}
    broker, port = start_broker(args.root, args.open_files, env)
    stats = multiprocessing.Array("l", 2)
    attacker = multiprocessing.Process(
        target=attack,
        args=(port, args.sockets, args.line_every, args.reconnect_after, stats),
        daemon=True,
    )
    try:
        assert broker.stderr is not None
        log_lines: list[str] = []
        threading.Thread(target=lambda: log_lines.extend(broker.stderr), daemon=True).start()
        cpu_before = broker_cpu(broker.pid)
        attacker.start()
        time.sleep(2.0)  # the attack ramps up (all sockets connected) before polling starts
        results: list[float | str] = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            tick = time.monotonic()
            results.append(good_request(port, args.good_source, args.timeout))
            time.sleep(max(0.0, args.poll_every - (time.monotonic() - tick)))
        alive = broker.poll() is None
        cpu = broker_cpu(broker.pid) - cpu_before if alive else None
        attacker.terminate()
        attacker.join(10)
        metrics = scrape(port, args.timeout) if alive else {}
    finally:
        if attacker.is_alive():
            attacker.kill()
        if broker.poll() is None:
            os.killpg(broker.pid, signal.SIGTERM)
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(broker.pid, signal.SIGKILL)
    latencies = sorted(r for r in results if isinstance(r, float))
    failures = [r for r in results if isinstance(r, str)]
    report = {
        "root": str(args.root),
        "sockets": args.sockets,
        "open_files": args.open_files,
        "per_ip": args.per_ip,
        "good_source": args.good_source,
        "polls": len(results),
        "failures": len(failures),
        "failure_kinds": sorted(set(failures)),
        "worst_s": round(max(latencies), 3) if latencies else None,
        "median_s": round(statistics.median(latencies), 4) if latencies else None,
        "p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3) if latencies else None,
        "over_2s": sum(1 for t in latencies if t > 2.0),
        "attacker_connections": stats[0],
        "attacker_closed_by_broker": stats[1],
        "broker_alive": alive,
        "broker_cpu_s": round(cpu, 2) if cpu is not None else None,
        "broker_metrics": metrics,
        "broker_warnings": [line.strip() for line in log_lines if "WARNING" in line][:5],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
