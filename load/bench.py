"""Benchmark runner: our broker against nginx + nchan, same scenarios, same load generators.

Run from the repository root::

    .venv/bin/python -m load.bench                 # everything, 3 runs each (< 10 min on 2 cores)
    .venv/bin/python -m load.bench --quick         # 1 run, shorter durations
    .venv/bin/python -m load.bench --only fanout,burst --runs 1
    .venv/bin/python -m load.bench --skip-broker   # nchan only
    .venv/bin/python -m load.bench --broker-url http://127.0.0.1:8080 --broker-pid 1234

Order of work: for each run, for each scenario, for each server: start a fresh server, run the
scenario, stop the server. Interleaving the servers spreads the machine's noise over both. A time
budget (--budget) skips work that would not fit, and says so in the report. Everything started is
killed at the end, also on Ctrl-C; only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from . import report
from .scenarios import FLOOD_ENV, SCENARIOS, Context, Settings
from .servers import (
    REPO_ROOT,
    BrokerServer,
    ClusterBroker,
    ExternalBroker,
    NchanServer,
    Server,
    broker_cli_help,
    nchan_available,
)
from .tools import LOAD_DIR, BenchError, ProcessRegistry, build_tools

DEFAULT_ORDER = ("fanout", "burst", "idle", "publish", "slow", "cluster", "flood")
REPEAT_PRIORITY = ("fanout", "burst", "slow", "publish", "idle", "flood", "cluster")


def _estimate_s(name: str, st: Settings) -> float:
    """Rough wall time of one scenario run against one server (for the budget)."""
    return {
        "fanout": len(st.fanout_ns) * (st.fanout_seconds * 1.4 + 3) + 3,
        "burst": st.burst_events * sum(st.burst_ns) / 50000 + 6,
        "idle": 8 + st.idle_steps[-1] / 1000,
        "publish": st.publish_seconds * 3 + 6,
        "slow": 2 * (st.slow_seconds * 1.4 + 4) + 3,
        "cluster": st.fanout_seconds * 1.4 + 12,
        "flood": 2 * (st.fanout_seconds * 1.4 + 4) + 4,
    }.get(name, 10)


def host_info() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    nginx = "nginx not installed"
    if shutil.which("nginx"):
        try:
            r = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10)
            nginx = (r.stderr or r.stdout).strip().replace("nginx version: ", "") + " + nchan"
        except (OSError, subprocess.TimeoutExpired):
            pass
    git = "unknown"
    try:
        r = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        git = r.stdout.strip() if r.returncode == 0 else "no commit yet (working tree)"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": nginx,
        "git": git,
        "hostname": socket.gethostname(),
        "loadavg_start": os.getloadavg(),
        "broker_config": "./config.toml" if (REPO_ROOT / "config.toml").exists() else "defaults",
    }


def _tag(host: dict[str, Any], quick: bool) -> str:
    cpu = re.sub(r"[^a-z0-9]+", "-", host["cpu_model"].lower()).strip("-")[:24] or "cpu"
    return f"{cpu}-{host['cores']}c" + ("-quick" if quick else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load.bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs", type=int, default=3, help="runs per figure, median reported (default 3)"
    )
    p.add_argument("--quick", action="store_true", help="1 run and shorter durations")
    p.add_argument("--only", help=f"comma-separated scenarios ({','.join(DEFAULT_ORDER)})")
    p.add_argument("--skip-broker", action="store_true", help="benchmark nginx+nchan only")
    p.add_argument("--skip-nchan", action="store_true", help="benchmark the broker only")
    p.add_argument("--broker-url", help="an already running broker, http://127.0.0.1:PORT")
    p.add_argument("--broker-pid", type=int, help="its process id (for CPU and memory figures)")
    p.add_argument(
        "--broker-arg",
        action="append",
        default=[],
        help="extra argument for `python -m broker run` (repeatable)",
    )
    p.add_argument("--nodes", type=int, default=3, help="nodes in the cluster scenario (default 3)")
    p.add_argument(
        "--storage",
        choices=("memory", "durable"),
        default="memory",
        help="the broker's [storage] kind (default memory, as in the published reports; "
        "durable keeps its store in a temp dir; python -m load.durable pairs the two)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=540.0,
        help="wall-time budget in seconds; work that would not fit is skipped (default 540)",
    )
    p.add_argument("--out", type=Path, help="output directory (default load/results/<date>-<tag>)")
    p.add_argument("--tag", help="tag in the default output directory name")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 1
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.only:
        unknown = set(args.only.split(",")) - set(DEFAULT_ORDER)
        if unknown:
            p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    settings = Settings.quick() if args.quick else Settings()
    settings.nodes = args.nodes
    host = host_info()
    date = datetime.date.today().isoformat()
    outdir = args.out or LOAD_DIR / "results" / f"{date}-{args.tag or _tag(host, args.quick)}"
    outdir.mkdir(parents=True, exist_ok=True)
    hist_dir = outdir / "hist"
    log_dir = outdir / "logs"
    hist_dir.mkdir(exist_ok=True)
    log_dir.mkdir(exist_ok=True)
    for old in hist_dir.glob("*.json"):
        old.unlink()

    registry = ProcessRegistry()

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (`cmd &`)
    notes: list[str] = []
    servers: list[Server] = []
    scenarios = [s for s in DEFAULT_ORDER if not args.only or s in args.only.split(",")]
    results: dict[str, Any] = {
        "date": date,
        "host": host,
        "runs": args.runs,
        "quick": args.quick,
        "settings": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()
        },
        "servers": [],
        "notes": notes,
        "scenarios": {},
    }
    interrupted = False
    cluster_servers: list[Server] = []
    flood_servers: list[Server] = []
    try:
        print(f"bench: building load tools in {LOAD_DIR / 'build'}", file=sys.stderr)
        ssesub_bin, pubload_bin = build_tools()
        if not args.skip_broker:
            if args.broker_url:
                servers.append(ExternalBroker(args.broker_url, args.broker_pid))
                if not args.broker_pid:
                    notes.append(
                        "broker given by --broker-url without --broker-pid: no CPU/memory figures"
                    )
            else:
                storage = {"BROKER_STORAGE_KIND": args.storage}
                if args.storage == "durable":
                    storage["BROKER_STORAGE_PATH"] = str(outdir / "broker-data")
                servers.append(BrokerServer(registry, log_dir, args.broker_arg, env=storage))
        if not args.skip_nchan:
            why = nchan_available()
            if why:
                notes.append(f"nginx+nchan skipped: {why}")
            else:
                servers.append(NchanServer(registry, log_dir))
        if not servers:
            print("bench: no server to benchmark", file=sys.stderr)
            return 2
        results["servers"] = [s.name for s in servers]

        if "cluster" in scenarios:
            helptext = broker_cli_help() if not args.skip_broker else ""
            why = ""
            if args.skip_broker or args.broker_url:
                why = "needs a cluster started by the bench (not with --skip-broker/--broker-url)"
            elif not re.search(r"broker cluster .*--nodes", helptext, re.S):
                why = "the broker has no `cluster --nodes` support yet (hook: scenarios.cluster)"
            if why:
                results["scenarios"]["cluster"] = {"skipped": why}
                scenarios.remove("cluster")
            else:
                cluster_servers.append(ClusterBroker(registry, log_dir, args.nodes or 3))
                notes.append(
                    "cluster: nginx+nchan has no cluster, so the table has the broker only"
                )
                if shutil.which("redis-server") and "--engine" in helptext:
                    cluster_servers.append(
                        ClusterBroker(registry, log_dir, args.nodes or 3, engine="redis")
                    )
                else:
                    notes.append("cluster on Redis skipped: redis-server is not installed")

        if "flood" in scenarios:
            if args.skip_broker or args.broker_url:
                results["scenarios"]["flood"] = {
                    "skipped": "needs a broker started by the bench with auth and rate limits"
                }
                scenarios.remove("flood")
            else:
                flood_servers.append(
                    BrokerServer(
                        registry,
                        log_dir,
                        args.broker_arg,
                        env={**FLOOD_ENV, "BROKER_STORAGE_KIND": "memory"},
                    )
                )
                notes.append(
                    "flood: broker only (nginx+nchan has no per-client publish limit); the "
                    "broker runs with JWT auth and publish_rate 25/s, burst 5 per token"
                )

        def servers_for(name: str) -> list[Server]:
            if name == "cluster":
                return cluster_servers
            if name == "flood":
                return flood_servers
            return servers

        for name in scenarios:
            results["scenarios"][name] = {
                s.name: {"runs": [], "errors": []} for s in servers_for(name)
            }

        ctx = Context(registry, ssesub_bin, pubload_bin, settings, hist_dir)
        took: dict[tuple[str, str], float] = {}
        for run in range(args.runs):
            ctx.run = run
            order = list(scenarios)
            if run:
                # If the budget cuts a later run, it cuts the least noisy figures first (idle
                # RSS is the same to a few tenths of a percent run to run).
                order.sort(key=lambda n: REPEAT_PRIORITY.index(n))
            for name in order:
                elapsed = time.monotonic() - t_start
                # what it took last run (else a rough static guess), for all servers together
                # so that every server gets the same number of runs
                est = sum(
                    took.get((name, s.name)) or _estimate_s(name, settings)
                    for s in servers_for(name)
                )
                if elapsed + est > args.budget:
                    msg = f"{name} run {run + 1} skipped: budget {args.budget:.0f} s"
                    notes.append(msg)
                    print(f"bench: {msg}", file=sys.stderr)
                    continue
                for server in servers_for(name):
                    slot = results["scenarios"][name][server.name]
                    elapsed = time.monotonic() - t_start
                    print(
                        f"bench: [{elapsed:5.0f}s] run {run + 1}/{args.runs} "
                        f"{name} on {server.label}",
                        file=sys.stderr,
                        flush=True,
                    )
                    t0 = time.monotonic()
                    try:
                        server.start()
                        try:
                            cases = SCENARIOS[name](ctx, server)
                        finally:
                            server.stop()
                        slot["runs"].append(cases)
                        took[(name, server.name)] = time.monotonic() - t0 + 2.0
                        print(
                            f"bench:         done in {time.monotonic() - t0:.1f}s: "
                            + _summary(name, cases),
                            file=sys.stderr,
                            flush=True,
                        )
                    except BenchError as exc:
                        slot["errors"].append(f"run {run + 1}: {exc}")
                        print(f"bench:         FAILED: {exc}", file=sys.stderr, flush=True)
                    except Exception:  # a bug in a scenario must not lose the other results
                        slot["errors"].append(f"run {run + 1}: {traceback.format_exc(limit=3)}")
                        print(f"bench:         FAILED:\n{traceback.format_exc()}", file=sys.stderr)
        for name in scenarios:
            for slot in results["scenarios"][name].values():
                slot["median"] = report.median_cases(slot["runs"])
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted: partial results")
        for per in results["scenarios"].values():
            for slot in per.values():
                if isinstance(slot, dict) and "runs" in slot:
                    slot["median"] = report.median_cases(slot["runs"])
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        for s in [*servers, *cluster_servers, *flood_servers]:
            try:
                s.stop()
            except Exception:
                pass
        registry.kill_all()
    report.trim_logs(log_dir)
    results["elapsed_s"] = time.monotonic() - t_start
    results["plots"] = report.write_plots(outdir, results, hist_dir)
    report.write_json(outdir / "results.json", results)
    report.write_markdown(outdir / "report.md", results)
    print(f"bench: wrote {outdir / 'report.md'} in {results['elapsed_s']:.0f}s", file=sys.stderr)
    return 130 if interrupted else 0


def _summary(name: str, cases: dict[str, dict[str, Any]]) -> str:
    keys = {
        "fanout": ("delivered_pct", "deliveries_per_s", "p99_ms"),
        "burst": ("deliveries_per_s", "p99_ms"),
        "idle": ("rss_mib", "kib_per_conn"),
        "publish": ("events_per_s", "resp_p99_ms"),
        "slow": ("p99_ms", "rss_growth_mib"),
        "flood": ("p99_ms", "p99_vs_alone", "flood_requests_per_s"),
        "cluster": ("delivered_pct", "p99_ms", "deliveries_per_s"),
    }.get(name, ())
    parts = []
    for case, m in cases.items():
        vals = ", ".join(f"{k}={m[k]:.4g}" for k in keys if isinstance(m.get(k), int | float))
        parts.append(f"{case}: {vals}")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
