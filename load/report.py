"""Turns collected results into report.md, results.json and PNG plots.

Results layout (also the layout of results.json):
``scenarios[name][server]["runs"]`` is a list of ``{case: {metric: value}}``, one per run, and
``["median"]`` the per-metric median over the runs that produced it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from .scenarios import case_tag

# metric -> (label, format, which way is better)
METRICS: dict[str, tuple[str, str, str]] = {
    "subscribers_ok": ("subscribers connected", "{:.0f}", "higher"),
    "delivered_pct": ("delivered %", "{:.2f}", "higher"),
    "deliveries_per_s": ("deliveries/s", "{:,.0f}", "higher"),
    "publish_rate": ("publisher achieved ev/s", "{:,.1f}", "higher"),
    "published": ("events published", "{:,.0f}", "higher"),
    "p50_ms": ("latency p50 ms", "{:.2f}", "lower"),
    "p90_ms": ("latency p90 ms", "{:.2f}", "lower"),
    "p99_ms": ("latency p99 ms", "{:.2f}", "lower"),
    "max_ms": ("latency max ms", "{:.2f}", "lower"),
    "server_cpu_pct": ("server CPU %", "{:.1f}", "lower"),
    "server_cpu_us_per_delivery": ("server CPU µs/delivery", "{:.2f}", "lower"),
    "server_cpu_us_per_request": ("server CPU µs/request", "{:.1f}", "lower"),
    "server_cpu_us_per_event": ("server CPU µs/event", "{:.2f}", "lower"),
    "client_cpu_s": ("ssesub CPU s", "{:.2f}", "lower"),
    "host_busy_pct": ("machine busy % (all cores, all processes)", "{:.0f}", ""),
    "dropped": ("dropped (notices)", "{:,.0f}", "lower"),
    "rss_mib": ("server RSS MiB", "{:.1f}", "lower"),
    "kib_per_conn": ("KiB per connection", "{:.2f}", "lower"),
    "connects_per_s": ("new subscribers/s (256 handshakes in flight)", "{:,.0f}", "higher"),
    "events_per_s": ("events/s", "{:,.0f}", "higher"),
    "resp_p50_ms": ("response p50 ms", "{:.2f}", "lower"),
    "resp_p99_ms": ("response p99 ms", "{:.2f}", "lower"),
    "rejected": ("rejected", "{:,.0f}", "lower"),
    "rss_before_mib": ("server RSS before MiB", "{:.1f}", "lower"),
    "rss_after_mib": ("server RSS after MiB", "{:.1f}", "lower"),
    "rss_growth_mib": ("server RSS growth MiB", "{:.1f}", "lower"),
    "stalled_closed_by_server": ("frozen clients closed by server", "{:.0f}", ""),
    "readers_dropped": ("drops seen by readers", "{:,.0f}", "lower"),
    "server_reported_drops": ("drops reported by the server (*)", "{:,.0f}", ""),
    "flood_requests_per_s": ("flood: requests answered/s", "{:,.0f}", ""),
    "flood_accepted_per_s": ("flood: accepted/s (limit 25)", "{:,.1f}", ""),
    "flood_refused": ("flood: refused with 429", "{:,.0f}", ""),
    "p99_vs_alone": ("p99 flooded / alone (target ≤ 1.2)", "{:.2f}", "lower"),
}

TITLES = {
    "fanout": "Fan-out, steady: 1 topic, 20 events/s",
    "burst": "Burst: events published as fast as possible",
    "idle": "Idle subscribers: server memory",
    "publish": "Publish throughput (1 subscriber)",
    "slow": "Slow consumers: 1000 subscribers, 20 ev/s, 2 KiB events",
    "cluster": "Cluster: subscribers spread over the nodes, 20 ev/s published on the first node",
    "flood": "Flood: 1000 subscribers at 20 ev/s while another token floods (broker only)",
}


def median_cases(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per case and metric, the median of the numeric values over the runs."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        for case, metrics in run.items():
            for m, v in metrics.items():
                out.setdefault(case, {}).setdefault(m, [])
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[case][m].append(v)
    return {
        case: {m: (statistics.median(vs) if vs else None) for m, vs in metrics.items()}
        for case, metrics in out.items()
    }


def _fmt(metric: str, v: Any) -> str:
    if v is None:
        return "-"
    fmt = METRICS.get(metric, (metric, "{:.3g}", ""))[1]
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    host = results["host"]
    ours, theirs = "broker", "nchan"
    lines = [
        f"# broker load test: {results['date']}",
        "",
        f"- machine: {host['cores']} cores, {host['cpu_model']}, {host['mem_gib']:.1f} GiB RAM, "
        f"kernel {host['kernel']}",
        f"- Python {host['python']}; {host['nginx']}; gcc-built ssesub/pubload (`load/src`)",
        f"- broker source: {host['git']}; started as `python -m broker run --port 0 "
        f"--host 127.0.0.1` with {host.get('broker_config', '?')}",
        f"- runs per figure: {results['runs']} (median)"
        f"{', quick mode' if results['quick'] else ''}; "
        f"wall time {results['elapsed_s']:.0f} s",
        "- server, load generators and the bench share the same cores: figures are for comparison "
        "on this machine, not absolute capacity. Load average when the bench started: "
        + ", ".join(f"{x:.2f}" for x in host.get("loadavg_start", ()))
        + " (other work on the machine "
        "shows up as 'machine busy %' above what the server and ssesub use).",
        f"- ssesub sleeps {results['settings']['coalesce_us']} µs after a wakeup with few ready "
        "sockets "
        "(fewer context switches); latencies can include up to that much.",
        "",
    ]
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    for name, per_server in results["scenarios"].items():
        lines += [f"## {TITLES.get(name, name)}", ""]
        if per_server.get("skipped"):
            lines += [f"Skipped: {per_server['skipped']}", ""]
            continue
        cols = [s for s in per_server if isinstance(per_server[s], dict)]
        both = ours in cols and theirs in cols
        names = {
            "broker": "broker (ours)",
            "nchan": "nginx+nchan",
            "broker-redis": "broker on Redis",
        }
        head = "| case | metric | " + " | ".join(
            f"{names.get(c, c)}, {len(per_server[c].get('runs', []))} run(s)" for c in cols
        )
        head += " | ours/nchan |" if both else " |"
        lines += [head, "|" + "---|" * (len(cols) + 2 + (1 if both else 0))]
        cases: list[str] = []
        for c in cols:
            for case in per_server[c].get("median", {}):
                if case not in cases:
                    cases.append(case)
        for case in cases:
            metrics: list[str] = []
            for c in cols:
                for m in per_server[c].get("median", {}).get(case, {}):
                    if m not in metrics:
                        metrics.append(m)
            for m in metrics:
                vals = [per_server[c].get("median", {}).get(case, {}).get(m) for c in cols]
                label, _, better = METRICS.get(m, (m, "", ""))
                arrow = {"higher": " ↑", "lower": " ↓"}.get(better, "")
                row = f"| {case} | {label}{arrow} | " + " | ".join(_fmt(m, v) for v in vals)
                if both:
                    a, b = vals[cols.index(ours)], vals[cols.index(theirs)]
                    ratio = (
                        f"{a / b:.2f}"
                        if isinstance(a, int | float) and isinstance(b, int | float) and b
                        else "-"
                    )
                    row += f" | {ratio} |"
                else:
                    row += " |"
                lines.append(row)
        for c in cols:
            for err in per_server[c].get("errors", []):
                lines.append(f"\n**{c} error:** {err}")
        lines.append("")
    lines += [
        "(*) broker: the `dropped` counters of `/stats`, in events; nginx+nchan: the number of",
        "'Missed message for eventsource subscriber' warnings in its error log (gaps, not events):",
        "nchan silently skips messages for a subscriber that is more than",
        "`nchan_message_buffer_length` (1000) messages behind.",
        "",
    ]
    if results.get("plots"):
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in results["plots"]] + [""]
    path.write_text("\n".join(lines))


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")


def _merged_hist(files: list[Path]) -> list[tuple[float, int]]:
    """(upper bound ms, count) buckets summed over histogram files."""
    acc: dict[int, tuple[int, int]] = {}
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for low, width, count in data.get("buckets", []):
            w, c = acc.get(low, (width, 0))
            acc[low] = (w, c + count)
    return [((low + w) / 1000.0, c) for low, (w, c) in sorted(acc.items())]


def write_plots(outdir: Path, results: dict[str, Any], hist_dir: Path) -> list[str]:
    """PNG plots; returns their file names (empty if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results.setdefault("notes", []).append("matplotlib is not installed: no plots")
        return []
    made: list[str] = []
    styles = {"broker": "-", "nchan": "--", "broker-redis": ":"}
    for scenario in ("fanout", "burst", "slow", "cluster"):
        per_server = results["scenarios"].get(scenario, {})
        if not per_server or per_server.get("skipped"):
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        drawn = 0
        for server in [s for s in per_server if isinstance(per_server[s], dict)]:
            for case in per_server[server].get("median", {}):
                files = sorted(hist_dir.glob(f"{scenario}-{server}-{case_tag(case)}-r*.json"))
                if not files:
                    files = sorted(hist_dir.glob(f"{scenario}-{server}-{case}-r*.json"))
                buckets = _merged_hist(files)
                total = sum(c for _, c in buckets)
                if not total:
                    continue
                cx, cy, cum = [], [], 0
                for x, c in buckets:
                    cum += c
                    cx.append(max(x, 0.001))
                    cy.append(cum / total)
                ax.step(
                    cx,
                    cy,
                    where="post",
                    linestyle=styles.get(server, "-"),
                    label=f"{server} {case}",
                )
                drawn += 1
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xscale("log")
        ax.set_xlabel("publish → deliver latency (ms, log)")
        ax.set_ylabel("fraction of deliveries")
        ax.set_title(TITLES.get(scenario, scenario))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        name = f"latency-cdf-{scenario}.png"
        fig.tight_layout()
        fig.savefig(outdir / name, dpi=110)
        plt.close(fig)
        made.append(name)

    def xy(scenario: str, server: str, metric: str, prefix: str) -> tuple[list[int], list[Any]]:
        med = results["scenarios"].get(scenario, {}).get(server, {}).get("median", {})
        pts = sorted(
            (int(case.split("=")[1]), m[metric])
            for case, m in med.items()
            if case.startswith(prefix) and m.get(metric) is not None
        )
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for server in results["servers"]:
        for scenario, marker in (("fanout", "o"), ("burst", "s")):
            xs, ys = xy(scenario, server, "deliveries_per_s", "N=")
            if xs:
                ax.plot(
                    xs,
                    ys,
                    marker=marker,
                    linestyle=styles.get(server, "-"),
                    label=f"{server} {scenario}",
                )
                drawn += 1
    if drawn:
        fan = results["settings"]
        xs = list(fan["fanout_ns"])
        ax.plot(
            xs,
            [n * fan["fanout_rate"] for n in xs],
            color="grey",
            linewidth=0.8,
            label="N x 20 ev/s",
        )
        ax.set_xscale("log")
        ax.set_xlabel("subscribers")
        ax.set_ylabel("deliveries/s")
        ax.set_title("Deliveries per second vs subscribers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "deliveries-vs-subscribers.png", dpi=110)
        made.append("deliveries-vs-subscribers.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for server in results["servers"]:
        xs, ys = xy("idle", server, "rss_mib", "conns=")
        if xs:
            ax.plot(xs, ys, marker="o", linestyle=styles.get(server, "-"), label=server)
            drawn += 1
    if drawn:
        ax.set_xlabel("idle SSE subscribers")
        ax.set_ylabel("server RSS (MiB)")
        ax.set_title("Server memory vs idle subscribers")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "idle-rss.png", dpi=110)
        made.append("idle-rss.png")
    plt.close(fig)
    return made


def trim_logs(log_dir: Path, head: int = 40, tail: int = 120) -> None:
    """Keeps the start and the end of each server log (a broker logs a line per closed
    stream, 10,000 lines in the idle scenario), so a results folder stays small enough to commit.
    """
    for f in log_dir.glob("*.log"):
        try:
            lines = f.read_text(errors="replace").splitlines(keepends=True)
        except OSError:
            continue
        if len(lines) > head + tail + 1:
            cut = len(lines) - head - tail
            omitted = f"[... {cut} lines omitted ...]\n"
            f.write_text("".join([*lines[:head], omitted, *lines[-tail:]]))
