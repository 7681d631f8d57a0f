"""Where a publish's CPU goes: py-spy on a broker under the publish load of the benchmark.

Run from the repository root (needs ``pip install -e '.[bench]'``, which brings py-spy)::

    .venv/bin/python -m load.profile                 # 16 connections, 8 s
    .venv/bin/python -m load.profile -k 1 --out /tmp/p

It starts ``broker run`` on a free loopback port, one SSE subscriber (ssesub) and pubload
publishing single events as fast as ``-k`` keep-alive connections go, records the broker with
py-spy (``--native``: time in C calls and system calls is attributed to them), and writes
``profile-publish-k<K>.txt`` (collapsed stacks: feed them to any flame graph tool) and
``profile-publish-k<K>.md`` (the functions by own and by inclusive share of the samples, and
the broker's user and system CPU per request).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .servers import REPO_ROOT
from .tools import BUILD_DIR, CLK_TCK, build_tools, free_port, wait_port


def _cpu(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _frame(entry: str) -> str:
    """``fn (path/to/file.py:12)`` -> ``fn (file.py)``."""
    name, _, where = entry.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


#: Where a sample's innermost frame is, by what its path contains (first match wins).
KINDS = (
    ("libc.so", "system calls (write, read, epoll_wait, epoll_ctl, ...)"),
    ("(trio/", "trio: run loop, scheduling, I/O waits"),
    ("(outcome/", "trio: run loop, scheduling, I/O waits"),
    ("(broker/", "broker code (Python)"),
    ("msgspec", "broker code (Python)"),
    ("libpython", "the interpreter's C code (str, bytes, dict, re)"),
)


def summarize(
    raw: Path, top: int = 25
) -> tuple[list[tuple[float, str]], list[tuple[float, str]], list[tuple[float, str]]]:
    """Own, inclusive and per-kind shares of the samples in a py-spy ``raw`` file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        entries = stack.split(";")
        frames = [_frame(f) for f in entries]
        own[frames[-1]] += n
        kinds[next((kind for key, kind in KINDS if key in entries[-1]), "other")] += n
        for name in set(frames):
            inclusive[name] += n
    share = 100.0 / max(total, 1)
    return (
        [(n * share, name) for name, n in own.most_common(top)],
        [(n * share, name) for name, n in inclusive.most_common(top)],
        [(n * share, name) for name, n in kinds.most_common()],
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-k", type=int, default=16, help="publisher connections (default 16)")
    p.add_argument("--seconds", type=float, default=8.0, help="how long to record (default 8)")
    p.add_argument("--out", type=Path, default=Path("."), help="output directory")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("profile: py-spy is not installed (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    build_tools()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ, BROKER_LOG_LEVEL="warning")
    argv_broker = [
        sys.executable,
        "-m",
        "broker",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    broker = subprocess.Popen(argv_broker, cwd=REPO_ROOT, env=env)
    procs = [broker]
    try:
        if not wait_port(port, 30):
            print("profile: the broker did not start", file=sys.stderr)
            return 1
        sub = [str(BUILD_DIR / "ssesub"), "--port", str(port), "--path", "/topics/prof/events"]
        procs.append(
            subprocess.Popen(
                [*sub, "--duration", str(args.seconds + 30)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        time.sleep(0.5)
        stem = args.out / f"profile-publish-k{args.k}"
        raw = stem.with_suffix(".txt")
        record = [
            spy,
            "record",
            "--pid",
            str(broker.pid),
            "--rate",
            "400",
            "--native",
            "--duration",
            str(int(args.seconds)),
            "--format",
            "raw",
            "--output",
            str(raw),
        ]
        recorder = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        cpu0 = _cpu(broker.pid)
        load = subprocess.run(
            [
                str(BUILD_DIR / "pubload"),
                "--port",
                str(port),
                "--path",
                "/topics/prof",
                "-k",
                str(args.k),
                "-m",
                "1000000000",
                "--duration",
                str(args.seconds - 2),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        cpu1 = _cpu(broker.pid)
        recorder.wait(timeout=args.seconds + 30)
        report = json.loads(load.stdout)
        n = max(report["accepted"], 1)
        own, inclusive, kinds = summarize(raw)
        user_us = (cpu1[0] - cpu0[0]) / n * 1e6
        system_us = (cpu1[1] - cpu0[1]) / n * 1e6
        lines = [
            f"# Publish profile: {args.k} connection(s), single events",
            "",
            f"- {report['events_per_s']:,.0f} publishes/s while profiled (native sampling slows "
            "the broker several-fold: read the shares, not the rate); broker CPU per request: "
            f"user {user_us:.0f} µs, system {system_us:.0f} µs",
            f"- py-spy record --native at 400 Hz; collapsed stacks in `{raw.name}`",
            "",
            "| share % | where the innermost frame is |",
            "|---|---|",
            *[f"| {share:.1f} | {kind} |" for share, kind in kinds],
            "",
            "| own % | function |",
            "|---|---|",
            *[f"| {share:.1f} | `{name}` |" for share, name in own],
            "",
            "| inclusive % | function |",
            "|---|---|",
            *[f"| {share:.1f} | `{name}` |" for share, name in inclusive],
            "",
        ]
        stem.with_suffix(".md").write_text("\n".join(lines))
        print(f"profile: wrote {stem.with_suffix('.md')}", file=sys.stderr)
        return 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
