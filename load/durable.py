"""The durable store against memory storage, paired in one run: python -m load.durable

Each run starts a fresh broker with ``[storage] kind = "memory"`` and one with the durable
default (its data directory in a temp dir), alternating, and runs the ``publish`` scenario
(single POSTs over 16 and 1 connections, batches of 100 over 4) and the ``fanout`` scenario
at 1000 subscribers on each; the table gives medians and the ratio durable/memory. Then:

* ``restart``: a store with ``--restart-events`` events (default 1 000 000, 100-byte
  events in 1000 topics, written by the store's own writer in groups of 1000) is opened by
  a fresh ``broker run``; the time from process start to ``listening on`` is reported,
  after a clean stop and after a ``kill -9`` (when the start checks every record), and
  the bytes on disk per event.
* ``group commit``: CPU µs per event of :meth:`DiskStore.write` at groups of 1, 16, 64.

Options: ``--runs N`` (default 2), ``--quick``, ``--out FILE`` (markdown, default stdout),
``--restart-events N``, ``--skip-restart``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import scenarios
from .scenarios import Context, Settings
from .servers import REPO_ROOT, BrokerServer, _python
from .tools import ProcessRegistry, build_tools

ROWS = (
    ("publish", "single, 16 conn", "events_per_s", "higher"),
    ("publish", "single, 16 conn", "server_cpu_us_per_request", "lower"),
    ("publish", "single, 1 conn", "events_per_s", "higher"),
    ("publish", "batch 100, 4 conn", "events_per_s", "higher"),
    ("publish", "batch 100, 4 conn", "server_cpu_us_per_event", "lower"),
    ("fanout", "N=1000", "p99_ms", "lower"),
    ("fanout", "N=1000", "delivered_pct", "higher"),
    ("fanout", "N=1000", "server_cpu_pct", "lower"),
)


Figures = dict[str, dict[tuple[str, str, str], list[float]]]


def paired(runs: int, quick: bool, log_dir: Path) -> Figures:
    settings = Settings.quick() if quick else Settings()
    settings.fanout_ns = (1000,)
    registry = ProcessRegistry()
    ssesub_bin, pubload_bin = build_tools()
    figures: Figures = {"memory": {}, "durable": {}}
    try:
        for run in range(runs):
            for kind in ("memory", "durable"):
                data = tempfile.mkdtemp(prefix="broker-durable-bench-")
                env = {"BROKER_STORAGE_KIND": kind, "BROKER_STORAGE_PATH": data}
                server = BrokerServer(registry, log_dir, env=env)
                ctx = Context(registry, ssesub_bin, pubload_bin, settings, log_dir, run=run)
                try:
                    for name, scenario in (
                        ("publish", scenarios.publish),
                        ("fanout", scenarios.fanout),
                    ):
                        server.start()
                        try:
                            cases = scenario(ctx, server)
                        finally:
                            server.stop()
                        for case, metrics in cases.items():
                            for metric, value in metrics.items():
                                if isinstance(value, int | float) and not isinstance(value, bool):
                                    figures[kind].setdefault((name, case, metric), []).append(value)
                finally:
                    shutil.rmtree(data, ignore_errors=True)
                print(f"durable bench: run {run + 1} {kind} done", file=sys.stderr)
    finally:
        registry.kill_all()
    return figures


def fill_store(path: str, events: int, topics: int = 1000, group: int = 1000) -> float:
    """Write ``events`` 100-byte events with the store's own writer; return seconds."""
    sys.path.insert(0, str(REPO_ROOT))
    from broker.core.positions import to_base36
    from broker.engines.durable import DiskStore, JournalOptions
    from broker.hub.events import Event

    store = DiskStore(JournalOptions(path=path))
    origin = store.open().origin
    began = time.perf_counter()
    payload = "x" * 100
    for start in range(1, events + 1, group):
        batch = [
            Event(
                topic=f"topic/{i % topics}",
                event_type=None,
                data=payload,
                is_json=False,
                origin=origin,
                seq=i,
                index=i,
                event_id=f"{origin}-{to_base36(i)}",
                published_at=time.time(),
            )
            for i in range(start, min(start + group, events + 1))
        ]
        store.write(batch)
    took = time.perf_counter() - began
    store.close()
    return took


def group_commit_cpu(
    path: str, sizes: tuple[int, ...] = (1, 16, 64), events: int = 20_000
) -> dict[int, float]:
    sys.path.insert(0, str(REPO_ROOT))
    from broker.engines.durable import DiskStore, JournalOptions
    from broker.hub.events import Event

    out = {}
    for size in sizes:
        where = os.path.join(path, f"g{size}")
        store = DiskStore(JournalOptions(path=where))
        origin = store.open().origin
        batches = []
        for start in range(1, events + 1, size):
            batches.append(
                [
                    Event(topic=f"t/{i % 50}", event_type=None, data="x" * 100, is_json=False,
                          origin=origin, seq=i, index=i, event_id=f"{origin}-{i}",
                          published_at=time.time())
                    for i in range(start, min(start + size, events + 1))
                ]
            )  # fmt: skip
        cpu0 = time.process_time()
        for batch in batches:
            store.write(batch)
        out[size] = 1e6 * (time.process_time() - cpu0) / events
        store.close()
    return out


def expiry_rss(
    topics: int = 100_000,
    idle: float = 10.0,
    settle: float = 60.0,
    allocator: str | None = None,
    waves: int = 3,
) -> dict[str, float]:
    """RSS of a broker before, at the peak of and after ``topics`` one-event topics expire.

    ``after``: 2 s after ``/stats`` says no topic is left; ``settled``: ``settle`` s later.
    Then ``waves - 1`` more waves of as many new topics, each measured once it expired
    (``wave2``, ``wave3`` …): whether memory stays where the first wave left it.
    ``allocator``: ``PYTHONMALLOC`` for the broker (``None``: CPython's default, its own
    arenas; ``malloc``: the C allocator for every object).
    """
    import json
    import urllib.request

    from .tools import rss_kib

    data = tempfile.mkdtemp(prefix="durable-expiry-")
    env = dict(
        os.environ,
        BROKER_STORAGE_KIND="durable",
        BROKER_STORAGE_PATH=data,
        BROKER_STORAGE_TOPIC_IDLE_SECONDS=str(idle),
    )
    env.pop("PYTHONMALLOC", None)
    if allocator:
        env["PYTHONMALLOC"] = allocator
    proc = subprocess.Popen(
        [_python(), "-m", "broker", "run", "--port", "0"],
        cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            if "listening on" in line:
                url = line.rsplit("listening on ", 1)[1].split()[0]
                break

        def batch(prefix: str, start: int, count: int) -> None:
            body = json.dumps(
                {
                    "events": [
                        {"topic": f"{prefix}/{i}", "data": {"done": i}}
                        for i in range(start, start + count)
                    ]
                }
            ).encode()
            req = urllib.request.Request(
                url + "/publish", body, {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req).read()

        def rss(kind: str) -> float:  # RssAnon: the heap; RssFile: mapped files (the store)
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    if line.startswith(f"{kind}:"):
                        return int(line.split()[1]) / 1024
            return 0.0

        def topics_in_memory() -> int:
            return json.load(urllib.request.urlopen(url + "/stats"))["topics"]

        def wait_empty() -> None:
            deadline = time.monotonic() + 10 * idle + 30
            while topics_in_memory() and time.monotonic() < deadline:
                time.sleep(0.2)

        figures: dict[str, float] = {}

        def measure(when: str) -> None:
            figures[f"{when}_mib"] = rss_kib([proc.pid]) / 1024
            figures[f"{when}_anon_mib"] = rss("RssAnon")
            figures[f"{when}_file_mib"] = rss("RssFile")

        for start in range(0, 2000, 100):  # warm up every path once, then let it expire
            batch("warm", start, 100)
        wait_empty()
        measure("baseline")
        began = time.monotonic()
        for start in range(0, topics, 100):
            batch("jobs", start, 100)
        figures["publish_s"] = time.monotonic() - began
        measure("peak")
        figures["topics_at_peak"] = topics_in_memory()
        wait_empty()
        time.sleep(2)  # the expiry round that emptied memory then gives the heap back
        measure("after")
        time.sleep(settle)
        measure("settled")
        figures["after_over_baseline"] = figures["after_mib"] / figures["baseline_mib"]
        figures["settled_over_baseline"] = figures["settled_mib"] / figures["baseline_mib"]
        for wave in range(2, waves + 1):
            for start in range(0, topics, 100):
                batch(f"jobs{wave}", start, 100)
            wait_empty()
            time.sleep(2)
            measure(f"wave{wave}")
        figures["waves"] = waves
        return figures
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)


def loop_stall(
    topics: int = 2000, per_topic: int = 50, seconds: float = 5.0, collect: bool = True
) -> dict[str, float]:
    """The longest Trio task step of an in-process broker while streams resume from the store.

    The store holds ``topics`` x ``per_topic`` events and nothing is in memory (a fresh
    start); ssesub opens one stream per topic resuming from its first event (each is read
    from the store in the reader thread) while pubload publishes to 16 hot topics over 16
    connections. A trio instrument times every task step, in wall and in the main thread's
    CPU time (which the other processes on a shared machine cannot inflate).
    """
    import trio

    sys.path.insert(0, str(REPO_ROOT))
    from broker.config import Settings as BrokerSettings
    from broker.server import serve

    ssesub_bin, pubload_bin = build_tools()
    data = tempfile.mkdtemp(prefix="durable-stall-")
    fill_store(data, topics * per_topic, topics=topics)

    class Steps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.wall = self.cpu = 0.0
            self.longest_wall = self.longest_cpu = 0.0
            self.steps = 0
            self.longest_task = ""

        def before_task_step(self, task: Any) -> None:
            self.wall, self.cpu = time.perf_counter(), time.thread_time()

        def after_task_step(self, task: Any) -> None:
            if not self.wall:  # the step that added this instrument
                return
            self.steps += 1
            wall = time.perf_counter() - self.wall
            if wall > self.longest_wall:
                self.longest_wall, self.longest_task = wall, task.name
            self.longest_cpu = max(self.longest_cpu, time.thread_time() - self.cpu)

    steps = Steps()
    out: dict[str, float] = {}
    import gc

    from broker.cli import (
        GC_MIDDLE_THRESHOLD,
        GC_OLD_THRESHOLD,
        GC_YOUNG_THRESHOLD,
        freeze_startup_heap,
    )

    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, GC_OLD_THRESHOLD)  # as broker run
    if not collect:  # to tell the broker's own steps from the collector's passes
        gc.disable()
    collections: dict[int, float] = {}  # the longest pass of each generation, wall
    collections_cpu: dict[int, float] = {}  # and in the collecting thread's CPU time
    began: list[float] = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[:] = time.perf_counter(), time.thread_time()
        else:
            gen = info["generation"]
            took = time.perf_counter() - began[0]
            collections[gen] = max(collections.get(gen, 0.0), took)
            took = time.thread_time() - began[1]
            collections_cpu[gen] = max(collections_cpu.get(gen, 0.0), took)

    gc.callbacks.append(on_gc)

    async def run() -> None:
        settings = BrokerSettings().replace(
            server={"port": 0}, storage={"kind": "durable", "path": data}
        )
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, settings)
            freeze_startup_heap()  # as `broker run` does
            collections.clear()  # (its own collection is not a stall under load)
            collections_cpu.clear()
            origin = server.hub.origin
            urls = Path(data) / "urls.txt"
            urls.write_text(
                "".join(f"{server.url}/topics/topic/{i}/events\n" for i in range(topics))
            )

            def load() -> None:
                registry = ProcessRegistry()
                try:
                    sub = subprocess.Popen(
                        [str(a) for a in (ssesub_bin, "--url-list", urls, "-n", topics,
                         "--duration", seconds, "--header", f"Last-Event-ID: {origin}-1")],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    pub = subprocess.run(
                        [str(a) for a in (pubload_bin, "--port", server.port, "--path",
                         "/topics/{topic}", "--topics", ",".join(f"hot/{i}" for i in range(16)),
                         "-k", 16, "-m", 1000000000, "--duration", seconds)],
                        capture_output=True, text=True,
                    )  # fmt: skip
                    sub.wait(seconds + 30)
                    out["pubload"] = pub.stdout[-300:]  # type: ignore[assignment]
                finally:
                    registry.kill_all()

            trio.lowlevel.add_instrument(steps)
            await trio.to_thread.run_sync(load)
            trio.lowlevel.remove_instrument(steps)
            out["loaded_topics"] = server.hub.statistics().topics
            server.request_shutdown()

    try:
        trio.run(run)
    finally:
        gc.callbacks.remove(on_gc)
        gc.enable()
        shutil.rmtree(data, ignore_errors=True)
    out["longest_gc_ms"] = {g: round(1e3 * t, 1) for g, t in sorted(collections.items())}  # type: ignore[assignment]
    out["longest_gc_cpu_ms"] = {g: round(1e3 * t, 1) for g, t in sorted(collections_cpu.items())}  # type: ignore[assignment]
    out.update(
        longest_step_wall_ms=1e3 * steps.longest_wall,
        longest_step_cpu_ms=1e3 * steps.longest_cpu,
        steps=steps.steps,
        longest_task=steps.longest_task,  # type: ignore[dict-item]
    )
    return out


def restart_time(path: str, *, kill: bool = False) -> float:
    """Seconds from ``broker run`` to ``listening on`` over the store at ``path``.

    The broker is stopped with SIGTERM (a clean stop), or with ``kill`` by SIGKILL: the
    next start then finds a store that did not stop cleanly and checks every record.
    """
    env = dict(os.environ, BROKER_STORAGE_KIND="durable", BROKER_STORAGE_PATH=path)
    began = time.perf_counter()
    proc = subprocess.Popen(
        [_python(), "-m", "broker", "run", "--port", "0"],
        cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                return time.perf_counter() - began
        raise RuntimeError("broker exited")
    finally:
        if kill:
            proc.kill()
        else:
            proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--restart-events", type=int, default=1_000_000)
    parser.add_argument("--skip-restart", action="store_true")
    parser.add_argument("--skip-paired", action="store_true")
    parser.add_argument("--expiry", action="store_true", help="100 000 topics expire: RSS")
    parser.add_argument("--expiry-topics", type=int, default=100_000)
    parser.add_argument("--expiry-settle", type=float, default=60.0, help="seconds")
    parser.add_argument(
        "--expiry-allocator", help="PYTHONMALLOC for the broker (default: CPython's)"
    )
    parser.add_argument("--expiry-waves", type=int, default=3, help="waves of topics")
    parser.add_argument("--stall", action="store_true", help="longest loop stall, resuming")
    args = parser.parse_args(argv)
    lines = [f"# Durable store vs memory storage ({time.strftime('%Y-%m-%d %H:%M')})", ""]
    lines.append(f"Host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start.")
    lines.append("")
    if not args.skip_paired:
        log_dir = Path(tempfile.mkdtemp(prefix="durable-bench-logs-"))
        figures = paired(args.runs, args.quick, log_dir)
        lines += [
            f"Paired runs: {args.runs} (medians), memory and durable alternating.", "",
            "| scenario | case | metric | memory | durable | durable/memory |",
            "|---|---|---|---|---|---|",
        ]  # fmt: skip
        for name, case, metric, _better in ROWS:
            mem = figures["memory"].get((name, case, metric))
            dur = figures["durable"].get((name, case, metric))
            if not mem or not dur:
                continue
            m, d = statistics.median(mem), statistics.median(dur)
            lines.append(
                f"| {name} | {case} | {metric} | {m:.1f} | {d:.1f} | {d / m if m else 0:.2f} |"
            )
        lines.append("")
    with tempfile.TemporaryDirectory(prefix="durable-store-") as tmp:
        cpu = group_commit_cpu(tmp)
        lines.append(
            "Group commit, CPU µs per 100-byte event (DiskStore.write, no fsync): "
            + ", ".join(f"groups of {k}: {v:.1f}" for k, v in cpu.items())
        )
        if not args.skip_restart:
            path = os.path.join(tmp, "big")
            took = fill_store(path, args.restart_events)
            size = os.path.getsize(os.path.join(path, "data.mdb"))
            ready = restart_time(path, kill=True)  # (clean start: the fill stopped cleanly)
            ready_unclean = restart_time(path)
            lines.append(
                f"Store with {args.restart_events} events (1000 topics, 100-byte payloads): "
                f"written in {took:.1f} s, {size / args.restart_events:.0f} bytes on disk per "
                f"event, `broker run` ready (listening) in {ready:.2f} s after a clean stop, "
                f"{ready_unclean:.2f} s after `kill -9` (every record checked)."
            )
    if args.expiry:
        rss = expiry_rss(
            args.expiry_topics,
            settle=args.expiry_settle,
            allocator=args.expiry_allocator,
            waves=args.expiry_waves,
        )
        lines.append(
            f"Topic expiry (PYTHONMALLOC={args.expiry_allocator or 'unset: pymalloc'}): "
            f"{args.expiry_topics} one-event topics (batches of 100, {rss['publish_s']:.1f} s): "
            f"RSS {rss['baseline_mib']:.1f} MiB before, {rss['peak_mib']:.1f} MiB with "
            f"{rss['topics_at_peak']:.0f} topics in memory, {rss['after_mib']:.1f} MiB 2 s after "
            f"they expired ({rss['after_over_baseline']:.2f}x the baseline), "
            f"{rss['settled_mib']:.1f} MiB {args.expiry_settle:g} s later "
            f"({rss['settled_over_baseline']:.2f}x). Of which anonymous memory (RssAnon, the "
            f"heap): {rss['baseline_anon_mib']:.1f}, {rss['peak_anon_mib']:.1f}, "
            f"{rss['after_anon_mib']:.1f}, {rss['settled_anon_mib']:.1f} MiB; mapped files "
            f"(RssFile: the libraries, and the store's pages LMDB mapped): "
            f"{rss['baseline_file_mib']:.1f}, {rss['peak_file_mib']:.1f}, "
            f"{rss['after_file_mib']:.1f}, {rss['settled_file_mib']:.1f} MiB."
        )
        if args.expiry_waves > 1:
            each = [rss["after_mib"]] + [
                rss[f"wave{w}_mib"] for w in range(2, args.expiry_waves + 1)
            ]
            lines.append(
                f"After each of {args.expiry_waves} waves of {args.expiry_topics} new topics "
                f"expired: RSS {', '.join(f'{m:.1f}' for m in each)} MiB (the last wave "
                f"{each[-1] / each[0]:.2f}x the first)."
            )
    for collect in (True, False) if args.stall else ():
        stall = loop_stall(collect=collect)
        lines.append("With the garbage collector on:" if collect else "With it off:")
        lines.append(
            f"Loop stall: {stall['loaded_topics']} topics read back from the store while "
            f"streams resumed and 16 connections published: longest task step "
            f"{stall['longest_step_wall_ms']:.1f} ms wall, {stall['longest_step_cpu_ms']:.1f} ms "
            f"CPU ({stall['steps']} steps; the longest in {stall['longest_task']}); longest "
            f"garbage collection per generation (ms, wall): {stall['longest_gc_ms']}, "
            f"(ms, CPU of the collecting thread): {stall['longest_gc_cpu_ms']}."
        )
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
