"""The benchmark scenarios. Each runs once against one started server and returns
``{case: {metric: value}}``; the runner repeats it and takes medians.

Timing rules: subscribers connect first (ssesub prints ``ready``), then the publisher starts.
Server CPU is read from /proc before publishing and after the subscribers finish, and divided by
the time from the first publish to the last delivery. Latency is publish-to-deliver, measured
with CLOCK_MONOTONIC stamps that pubload writes into each event (same clock in both tools).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from .servers import Server
from .tools import BenchError, ProcessRegistry, Tool, busy_pct, cpu_seconds, host_cpu, rss_kib

Metrics = dict[str, Any]
Cases = dict[str, Metrics]


@dataclasses.dataclass
class Settings:
    """Durations and sizes; ``quick`` shortens them."""

    fanout_ns: tuple[int, ...] = (100, 1000, 5000)
    fanout_rate: float = 20.0
    fanout_seconds: float = 10.0
    burst_ns: tuple[int, ...] = (100, 1000)
    burst_events: int = 2000
    burst_connections: int = 4
    idle_steps: tuple[int, ...] = (0, 1000, 5000, 10000)
    publish_seconds: float = 2.0
    batch_size: int = 100
    slow_n: int = 1000
    slow_stall_fraction: float = 0.1
    slow_seconds: float = 5.0
    slow_event_bytes: int = 2048
    slow_stall_rcvbuf: int = 4096
    coalesce_us: int = 200
    cluster_subscribers: int = 999
    nodes: int = 0

    @classmethod
    def quick(cls) -> Settings:
        return cls(fanout_seconds=5.0, publish_seconds=1.5, slow_seconds=4.0)


@dataclasses.dataclass
class Context:
    registry: ProcessRegistry
    ssesub_bin: Path
    pubload_bin: Path
    settings: Settings
    hist_dir: Path
    run: int = 0

    def ssesub(
        self, server: Server, *args: Any, name: str = "ssesub", port: int | None = None
    ) -> Tool:
        argv = [
            self.ssesub_bin,
            "--host",
            "127.0.0.1",
            "--port",
            port or server.port,
            "--coalesce-us",
            self.settings.coalesce_us,
            *args,
        ]
        return Tool(self.registry, argv, name=name)

    def pubload(self, server: Server, *args: Any, port: int | None = None) -> Tool:
        argv = [self.pubload_bin, "--host", "127.0.0.1", "--port", port or server.port, *args]
        return Tool(self.registry, argv, name="pubload")

    def hist(self, scenario: str, server: Server, case: str) -> Path:
        return self.hist_dir / f"{scenario}-{server.name}-{case_tag(case)}-r{self.run}.json"


def case_tag(case: str) -> str:
    """A case name as it appears in file names ("10 % stall" -> "10pctstall")."""
    return re.sub(r"[^A-Za-z0-9=._-]+", "", case.replace("%", "pct"))


def _lat(s: Metrics) -> Metrics:
    lat = s["latency_ms"]
    return {"p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"], "max_ms": lat["max"]}


def _check_connected(ready: Metrics, n: int, what: str) -> None:
    if ready["ok"] + ready.get("stalled", 0) < n:
        raise BenchError(
            f"{what}: only {ready['ok']} of {n} subscribers connected "
            f"(refused {ready['fail_refused']}, timeout {ready['fail_timeout']}, "
            f"http {ready['fail_http']} last status {ready['last_bad_status']}, "
            f"early close {ready['fail_early_close']}, other {ready['fail_other']})"
        )


def _parse_ready(line: str) -> Metrics:
    out: Metrics = {}
    for part in line.split()[1:]:
        k, _, v = part.partition("=")
        try:
            out[k] = float(v) if "." in v else int(v)
        except ValueError:
            out[k] = v
    return out


def _paced_fanout(
    ctx: Context,
    server: Server,
    scenario: str,
    case: str,
    n: int,
    seconds: float,
    extra_sub: list[Any] | None = None,
    size: int = 0,
    measure: Callable[[str], None] | None = None,
    extra_pub: list[Any] | None = None,
) -> tuple[Metrics, Metrics, Metrics]:
    """N subscribers, one publisher at the fan-out rate for ``seconds``.

    Returns (subscriber report, publisher report, derived metrics). ``measure(when)`` is called
    with "before" (subscribers connected) and "after" (deliveries complete, connections still open).
    """
    st = ctx.settings
    events = int(st.fanout_rate * seconds)
    topic = f"{scenario}-{case}-r{ctx.run}".replace("=", "")
    sub = ctx.ssesub(
        server,
        "--path",
        server.sub_path(topic),
        "-n",
        n,
        "--expect",
        events,
        "--linger",
        2,
        "--hold",
        "--duration",
        seconds * 3 + 60,
        "--hist",
        ctx.hist(scenario, server, case),
        *(extra_sub or []),
    )
    try:
        ready = _parse_ready(sub.wait_ready(60))
    except BenchError:
        sub.stop()
        raise
    if ready.get("ok", 0) + ready.get("stalled", 0) < n:
        s = sub.stop()
        _check_connected(s, n, f"{scenario} {case}")
    time.sleep(0.3)
    if measure:
        measure("before")
    pids = server.pids()
    cpu0 = cpu_seconds(pids)
    host0 = host_cpu()
    t_pub = time.monotonic_ns()
    pub_args: list[Any] = [
        "--path",
        server.pub_path(topic),
        "-k",
        1,
        "-m",
        events,
        "--rate",
        st.fanout_rate,
        "--duration",
        seconds * 1.5 + 1,
    ]
    if size:
        pub_args += ["--size", size]
    pub_args += extra_pub or []
    p = ctx.pubload(server, *pub_args).finish(seconds * 1.5 + 30)
    sub.wait_complete(30)
    cpu1 = cpu_seconds(pids)
    host1 = host_cpu()
    if measure:
        measure("after")
    s = sub.stop()
    window = (s["last_event_mono_ns"] - t_pub) / 1e9 if s["last_event_mono_ns"] else 0.0
    readers = max(s["ok"], 1)  # ssesub's "ok" counts reading subscribers only
    accepted = p["accepted"]
    derived: Metrics = {
        "subscribers_ok": s["ok"],
        "delivered_pct": 100.0 * s["events"] / (readers * accepted) if accepted else 0.0,
        "deliveries_per_s": s["events_per_s"],
        "publish_rate": p["events_per_s"],
        "published": accepted,
        **_lat(s),
        "server_cpu_pct": 100.0 * (cpu1 - cpu0) / window if window > 0 and pids else None,
        "server_cpu_us_per_delivery": 1e6 * (cpu1 - cpu0) / s["events"]
        if s["events"] and pids
        else None,
        "client_cpu_s": s["cpu_s"],
        "host_busy_pct": busy_pct(host0, host1),
        "dropped": s["dropped"],
    }
    return s, p, derived


def fanout(ctx: Context, server: Server) -> Cases:
    """1 topic, N subscribers, 20 events/s for N in fanout_ns."""
    out: Cases = {}
    for n in ctx.settings.fanout_ns:
        case = f"N={n}"
        _, _, d = _paced_fanout(ctx, server, "fanout", case, n, ctx.settings.fanout_seconds)
        out[case] = d
    return out


def burst(ctx: Context, server: Server) -> Cases:
    """N subscribers, burst_events published as fast as possible over a few connections."""
    st = ctx.settings
    out: Cases = {}
    for n in st.burst_ns:
        case = f"N={n}"
        topic = f"burst-{n}-r{ctx.run}"
        sub = ctx.ssesub(
            server,
            "--path",
            server.sub_path(topic),
            "-n",
            n,
            "--expect",
            st.burst_events,
            "--linger",
            2,
            "--duration",
            120,
            "--hist",
            ctx.hist("burst", server, case),
        )
        try:
            sub.wait_ready(60)
        except BenchError:
            sub.stop()
            raise
        time.sleep(0.3)
        pids = server.pids()
        cpu0 = cpu_seconds(pids)
        host0 = host_cpu()
        p = ctx.pubload(
            server,
            "--path",
            server.pub_path(topic),
            "-k",
            st.burst_connections,
            "-m",
            st.burst_events,
            "--duration",
            60,
        ).finish(90)
        s = sub.finish(90)
        cpu1 = cpu_seconds(pids)
        host1 = host_cpu()
        _check_connected(s, n, f"burst {case}")
        span = (
            (s["last_event_mono_ns"] - p["first_send_mono_ns"]) / 1e9
            if s["last_event_mono_ns"]
            else 0
        )
        accepted = p["accepted"]
        out[case] = {
            "delivered_pct": 100.0 * s["events"] / (n * accepted) if accepted else 0.0,
            "deliveries_per_s": s["events"] / span if span > 0 else 0.0,
            "publish_rate": p["events_per_s"],
            **_lat(s),
            "server_cpu_us_per_delivery": 1e6 * (cpu1 - cpu0) / s["events"]
            if s["events"] and pids
            else None,
            "dropped": s["dropped"],
            "client_cpu_s": s["cpu_s"],
            "host_busy_pct": busy_pct(host0, host1),
        }
    return out


def idle(ctx: Context, server: Server) -> Cases:
    """Server RSS while holding 0, 1000, 5000, 10000 idle SSE subscribers."""
    st = ctx.settings
    pids = server.pids()
    if not pids:
        raise BenchError(
            "idle: the server's process is unknown (use --broker-pid with --broker-url)"
        )
    held: list[Tool] = []
    out: Cases = {}
    have = 0
    rss0 = None
    try:
        for step in st.idle_steps:
            if step > have:
                t = ctx.ssesub(
                    server,
                    "--path",
                    server.sub_path("idle"),
                    "-n",
                    step - have,
                    "--idle",
                    "--duration",
                    600,
                    name=f"ssesub-idle-{step}",
                )
                held.append(t)
                ready = _parse_ready(t.wait_ready(120))
                if ready.get("ok", 0) < step - have:
                    res = t.stop()
                    _check_connected(res, step - have, f"idle step {step}")
                secs = float(ready.get("t", 0) or 0)
                rate = (step - have) / secs if secs > 0 else None
                have = step
            time.sleep(0.5)
            rss = rss_kib(server.pids())
            if rss0 is None:
                rss0 = rss
            case = f"conns={step}"
            out[case] = {"rss_mib": rss / 1024.0}
            if step:
                out[case]["kib_per_conn"] = (rss - rss0) / step
                out[case]["connects_per_s"] = rate
    finally:
        for t in held:
            t.stop()
    return out


def publish(ctx: Context, server: Server) -> Cases:
    """Publish throughput with 1 subscriber: 16 connections, 1 connection, batches (broker)."""
    st = ctx.settings
    topic = f"pub-r{ctx.run}"
    drops0 = _find_drops(server.stats())
    sub = ctx.ssesub(server, "--path", server.sub_path(topic), "-n", 1, "--duration", 300)
    try:
        sub.wait_ready(30)
        out: Cases = {}
        pids = server.pids()
        total = 0
        for k in (16, 1):
            p, case = _flat_out_publish(
                ctx, server, pids, "server_cpu_us_per_request", "--path", server.pub_path(topic),
                "-k", k,
            )  # fmt: skip
            total += p["accepted"]
            out[f"single, {k} conn"] = case
        if server.batch_path:
            p, case = _flat_out_publish(
                ctx, server, pids, "server_cpu_us_per_event", "--path", server.batch_path,
                "--batch", st.batch_size, "--topic", topic, "-k", 4,
            )  # fmt: skip
            total += p["accepted"]
            out[f"batch {st.batch_size}, 4 conn"] = case
        time.sleep(0.5)
    finally:
        s = sub.stop()
    drops1 = _find_drops(server.stats())
    out["subscriber"] = {
        "server_reported_drops": drops1 - (drops0 or 0) if drops1 is not None else None,
        "delivered_pct": 100.0 * (s["events"] + s["dropped"]) / total if total else 0.0,
        "dropped": s["dropped"],
    }
    return out


def _flat_out_publish(
    ctx: Context, server: Server, pids: list[int], cpu_metric: str, *args: Any
) -> tuple[Metrics, Metrics]:
    """pubload as fast as it goes for publish_seconds; its report and the case's figures."""
    seconds = ctx.settings.publish_seconds
    cpu0 = cpu_seconds(pids)
    p = ctx.pubload(server, *args, "-m", 1e9, "--duration", seconds).finish(seconds + 30)
    cpu1 = cpu_seconds(pids)
    accepted = p["accepted"]
    return p, {
        "events_per_s": p["events_per_s"],
        "resp_p50_ms": p["resp_ms"]["p50"],
        "resp_p99_ms": p["resp_ms"]["p99"],
        "rejected": p["events_sent"] - accepted,
        cpu_metric: 1e6 * (cpu1 - cpu0) / accepted if accepted and pids else None,
    }


def _find_drops(obj: Any) -> int | None:
    """Sums integer fields whose name mentions 'drop' anywhere in a stats document."""
    found = None
    if isinstance(obj, dict):
        for k, v in obj.items():
            if "drop" in str(k).lower() and isinstance(v, int | float) and not isinstance(v, bool):
                found = (found or 0) + int(v)
            else:
                sub = _find_drops(v)
                if sub is not None:
                    found = (found or 0) + sub
    elif isinstance(obj, list):
        for v in obj:
            sub = _find_drops(v)
            if sub is not None:
                found = (found or 0) + sub
    return found


def slow(ctx: Context, server: Server) -> Cases:
    """1000 subscribers at 20 ev/s, without and with 10 % frozen clients."""
    st = ctx.settings
    out: Cases = {}
    for case, fraction in (
        ("no stall", 0.0),
        (f"{int(st.slow_stall_fraction * 100)} % stall", st.slow_stall_fraction),
    ):
        rss: dict[str, int] = {}
        stats: dict[str, Any] = {}

        def measure(when: str, rss: dict[str, int] = rss, stats: dict[str, Any] = stats) -> None:
            rss[when] = rss_kib(server.pids())
            stats[when] = server.stats()

        extra = (
            ["--stall-fraction", fraction, "--stall-rcvbuf", st.slow_stall_rcvbuf]
            if fraction
            else []
        )
        s, _, d = _paced_fanout(
            ctx,
            server,
            "slow",
            case.replace(" ", "").replace("%", "pct"),
            st.slow_n,
            st.slow_seconds,
            extra_sub=extra,
            size=st.slow_event_bytes,
            measure=measure,
        )
        drops_before = _find_drops(stats.get("before"))
        drops_after = _find_drops(stats.get("after"))
        out[case] = {
            **{
                k: d[k]
                for k in (
                    "delivered_pct",
                    "publish_rate",
                    "p50_ms",
                    "p99_ms",
                    "max_ms",
                    "server_cpu_pct",
                )
            },
            "rss_before_mib": rss["before"] / 1024 if rss.get("before") else None,
            "rss_after_mib": rss["after"] / 1024 if rss.get("after") else None,
            "rss_growth_mib": (rss["after"] - rss["before"]) / 1024 if rss.get("before") else None,
            "stalled_closed_by_server": s["stalled_closed_by_server"] if fraction else None,
            "readers_dropped": s["dropped"],
            "server_reported_drops": (drops_after - (drops_before or 0))
            if drops_after is not None
            else None,
        }
    return out


def cluster(ctx: Context, server: Server) -> Cases:
    """A local cluster (``broker cluster --nodes N``): subscribers spread evenly over the nodes,
    one publisher on the first node at the fan-out rate. Per node: delivered %, latency (the
    other nodes add one peer-link hop), and for the whole cluster deliveries/s and CPU."""
    st = ctx.settings
    ports: list[int] = list(getattr(server, "ports", [server.port]))
    per_node = max(1, st.cluster_subscribers // len(ports))
    events = int(st.fanout_rate * st.fanout_seconds)
    topic = f"cluster-r{ctx.run}"
    names = [f"node n{i + 1} ({'publisher' if i == 0 else 'peer'})" for i in range(len(ports))]
    subs: list[Tool] = []
    try:
        for port, case in zip(ports, names, strict=True):
            subs.append(
                ctx.ssesub(
                    server,
                    "--path",
                    server.sub_path(topic),
                    "-n",
                    per_node,
                    "--expect",
                    events,
                    "--linger",
                    3,
                    "--hold",
                    "--duration",
                    st.fanout_seconds * 3 + 60,
                    "--hist",
                    ctx.hist("cluster", server, case),
                    port=port,
                    name=f"ssesub-{case_tag(case)}",
                )
            )
        for t in subs:
            t.wait_ready(60)
        time.sleep(0.5)  # subscriptions reach the peers
        pids = server.pids()
        cpu0 = cpu_seconds(pids)
        t_pub = time.monotonic_ns()
        p = ctx.pubload(
            server,
            "--path",
            server.pub_path(topic),
            "-k",
            1,
            "-m",
            events,
            "--rate",
            st.fanout_rate,
            "--duration",
            st.fanout_seconds * 1.5 + 1,
            port=ports[0],
        ).finish(st.fanout_seconds * 1.5 + 30)
        for t in subs:
            t.wait_complete(30)
        cpu1 = cpu_seconds(pids)
    finally:
        results = [t.stop() for t in subs]
    out: Cases = {}
    accepted = p["accepted"]
    last = 0
    total = 0
    for case, s in zip(names, results, strict=True):
        _check_connected(s, per_node, f"cluster {case}")
        out[case] = {
            "delivered_pct": 100.0 * s["events"] / (s["ok"] * accepted) if accepted else 0.0,
            **_lat(s),
            "dropped": s["dropped"],
        }
        total += s["events"]
        last = max(last, s["last_event_mono_ns"])
    window = (last - t_pub) / 1e9 if last else 0.0
    out["all nodes"] = {
        "subscribers_ok": sum(s["ok"] for s in results),
        "publish_rate": p["events_per_s"],
        "deliveries_per_s": total / window if window > 0 else 0.0,
        "server_cpu_pct": 100.0 * (cpu1 - cpu0) / window if window > 0 and pids else None,
        "server_cpu_us_per_delivery": 1e6 * (cpu1 - cpu0) / total if total and pids else None,
    }
    return out


#: The flood scenario's broker: JWT auth and a per-token publish rate of 25/s, burst 5.
FLOOD_SECRET: Final = "load-bench-flood-secret-at-least-32-bytes"
FLOOD_ENV: Final = {
    "BROKER_AUTH_SECRET": FLOOD_SECRET,
    "BROKER_LIMITS_PUBLISH_RATE": "25",
    "BROKER_LIMITS_PUBLISH_BURST": "5",
}


def _bearer(subject: str) -> list[str]:
    import jwt  # the broker's own dependency (PyJWT)

    claims = {"sub": subject, "publish": ["**"], "exp": int(time.time()) + 3600}
    return ["--header", f"Authorization: Bearer {jwt.encode(claims, FLOOD_SECRET, 'HS256')}"]


def flood(ctx: Context, server: Server) -> Cases:
    """1000 subscribers, 20 ev/s from a publisher within its token's rate limit: once alone,
    once while another token floods the broker as fast as 4 keep-alive connections go (every
    request over its 25/s is refused with 429). The flood publishes to a topic nobody reads,
    so the subscribers' load is the same in both cases: only the flood's cost differs."""
    st = ctx.settings
    out: Cases = {}
    for case in ("alone", "flooded"):
        flooder: dict[str, Any] = {}

        def measure(when: str, flooder: dict[str, Any] = flooder, case: str = case) -> None:
            if case == "alone":
                return
            if when == "before":
                flooder["cpu0"] = cpu_seconds(server.pids())
                flooder["t0"] = time.monotonic()
                flooder["tool"] = ctx.pubload(
                    server,
                    "--path",
                    "/topics/flood-sink",
                    "-k",
                    4,
                    "-m",
                    1e9,
                    "--duration",
                    st.fanout_seconds * 3 + 30,
                    *_bearer("flooder"),
                )
                time.sleep(1.0)  # the flood is in full swing before the paced publisher starts
            else:
                flooder["report"] = flooder["tool"].stop()
                flooder["t1"] = time.monotonic()

        _, _, d = _paced_fanout(
            ctx,
            server,
            "flood",
            case,
            st.slow_n,
            st.fanout_seconds,
            measure=measure,
            extra_pub=_bearer("legit"),
        )
        if "report" in flooder:
            f, seconds = flooder["report"], flooder["t1"] - flooder["t0"]
            d["flood_requests_per_s"] = f["requests"] / seconds
            d["flood_accepted_per_s"] = f["accepted"] / seconds
            d["flood_refused"] = f["requests"] - f["accepted"]
        out[case] = d
    alone, flooded = out["alone"], out["flooded"]
    if alone.get("p99_ms") and flooded.get("p99_ms"):
        out["flooded"]["p99_vs_alone"] = flooded["p99_ms"] / alone["p99_ms"]
    return out


SCENARIOS: dict[str, Callable[[Context, Server], Cases]] = {
    "fanout": fanout,
    "burst": burst,
    "idle": idle,
    "publish": publish,
    "slow": slow,
    "cluster": cluster,
    "flood": flood,
}
