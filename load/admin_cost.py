"""What an open admin page costs the hot path: fan-out latency with the page polling vs not.

    .venv/bin/python -m load.admin_cost [--runs 3] [-n 1000] [--seconds 10] [--viewers 1]

Each run starts a fresh broker twice (the order alternates between runs, so drift on a shared
machine hits both alike) and runs the ``fanout`` scenario's paced case (N subscribers,
20 events/s, latency stamped by pubload, read by ssesub). With the page "open", ``--viewers``
threads do what ``broker/control/static/admin.js`` does: hold ``/admin/api/stream`` open and poll
``connections`` and ``topics`` every 2 s and ``cluster`` every 5 s. Prints one JSON object:
every run's figures, the medians and the ratio on/off of p50, p99 and CPU per delivery.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from .scenarios import Context, Settings, _paced_fanout
from .servers import BrokerServer
from .tools import ProcessRegistry, build_tools

POLL_SECONDS = 2.0
CLUSTER_POLL_SECONDS = 5.0


class AdminViewer:
    """One open admin page: the stats stream held open, the tables polled."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.stop = threading.Event()
        self.requests = 0
        self.stream_bytes = 0
        self._threads = [
            threading.Thread(target=self._stream, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]

    def __enter__(self) -> AdminViewer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)

    def _stream(self) -> None:
        with urllib.request.urlopen(f"{self.base}/admin/api/stream", timeout=10) as answer:
            while not self.stop.is_set():
                chunk = answer.read1(65536)
                if not chunk:
                    return
                self.stream_bytes += len(chunk)

    def _poll(self) -> None:
        next_cluster = 0.0
        while not self.stop.is_set():
            paths = ["/admin/api/connections?sort=lag&limit=50", "/admin/api/topics?sort=rate"]
            if time.monotonic() >= next_cluster:
                paths.append("/admin/api/cluster")
                next_cluster = time.monotonic() + CLUSTER_POLL_SECONDS
            for path in paths:
                with urllib.request.urlopen(self.base + path, timeout=10) as answer:
                    answer.read()
                self.requests += 1
            self.stop.wait(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.admin_cost")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", type=int, default=1000, help="subscribers")
    parser.add_argument("--seconds", type=float, default=10.0, help="publishing time per case")
    parser.add_argument("--viewers", type=int, default=1, help="admin pages open")
    args = parser.parse_args(argv)
    ssesub_bin, pubload_bin = build_tools()
    registry = ProcessRegistry()
    work = Path(tempfile.mkdtemp(prefix="admin-cost-"))
    ctx = Context(registry, ssesub_bin, pubload_bin, Settings(), work)
    server = BrokerServer(registry, work)
    rows: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    try:
        for run in range(args.runs):
            ctx.run = run
            order = ("off", "on") if run % 2 == 0 else ("on", "off")
            for mode in order:
                server.start()
                try:
                    count = args.viewers if mode == "on" else 0
                    viewers = [AdminViewer(server.port) for _ in range(count)]
                    for viewer in viewers:
                        viewer.__enter__()
                    _, _, derived = _paced_fanout(
                        ctx, server, "admincost", mode, args.n, args.seconds
                    )
                    for viewer in viewers:
                        viewer.__exit__()
                    derived["admin_requests"] = sum(v.requests for v in viewers)
                    derived["admin_stream_bytes"] = sum(v.stream_bytes for v in viewers)
                finally:
                    server.stop()
                rows[mode].append(derived)
                print(
                    f"run {run} {mode}: p50 {derived['p50_ms']:.2f} ms p99 {derived['p99_ms']:.2f}"
                    f" ms, {derived['server_cpu_us_per_delivery']:.2f} us/delivery,"
                    f" delivered {derived['delivered_pct']:.1f} %",
                    file=sys.stderr,
                )
    finally:
        registry.kill_all()

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[mode] if r.get(key) is not None)

    keys = ("p50_ms", "p99_ms", "server_cpu_us_per_delivery", "deliveries_per_s")
    medians = {mode: {k: median(mode, k) for k in keys} for mode in rows}
    result = {
        "subscribers": args.n,
        "rate": ctx.settings.fanout_rate,
        "seconds": args.seconds,
        "viewers": args.viewers,
        "runs": rows,
        "median": medians,
        "ratio_on_off": {k: medians["on"][k] / medians["off"][k] for k in keys},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
