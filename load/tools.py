"""Running the C load generators, and reading a server's cost from /proc.

Theory of operation: every child process is started through one :class:`ProcessRegistry`, in its
own session (process group), so the bench can always kill what it started, and only that, by
process group id. A :class:`Tool` wraps one run of ``ssesub`` or ``pubload``: two threads drain its
stdout and stderr (so a pipe never fills), ``ssesub``'s ``ready`` and ``complete`` lines on stderr
are turned into events, and every wait is bounded. The tools print one JSON object on stdout when
they end (also on SIGTERM), which :meth:`Tool.finish` returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

LOAD_DIR: Final = Path(__file__).resolve().parent
BUILD_DIR: Final = LOAD_DIR / "build"
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A scenario could not run (server did not start, tool failed, timeout)."""


class ProcessRegistry:
    """Starts child processes in their own process group and kills them all at the end."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def kill(
        self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace_s: float = 5.0
    ) -> None:
        """Signals the process group, waits up to ``grace_s``, then SIGKILLs the group.

        The group is only signalled while its leader is unreaped, so the group id is still ours.
        """
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def kill_all(self) -> None:
        for proc in list(self._procs):
            self.kill(proc, grace_s=3.0)


def build_tools(timeout_s: float = 120.0) -> tuple[Path, Path]:
    """Runs ``make -C load``; returns the paths of ssesub and pubload."""
    try:
        subprocess.run(
            ["make", "-s", "-C", str(LOAD_DIR)],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"building the load tools failed:\n{exc.stdout}{exc.stderr}") from None
    except subprocess.TimeoutExpired:
        raise BenchError("building the load tools timed out") from None
    return BUILD_DIR / "ssesub", BUILD_DIR / "pubload"


class Tool:
    """One running load generator (see the module docstring)."""

    def __init__(self, registry: ProcessRegistry, argv: Sequence[str], *, name: str) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self._registry = registry
        self._out: list[str] = []
        self._err: list[str] = []
        self._ready = threading.Event()
        self._complete = threading.Event()
        self.proc = registry.popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._threads = [
            threading.Thread(target=self._drain_out, daemon=True),
            threading.Thread(target=self._drain_err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _drain_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.append(line)

    def _drain_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)
            if line.startswith("ready"):
                self._ready.set()
            elif line.startswith("complete"):
                self._complete.set()
        self._ready.set()
        self._complete.set()

    def wait_ready(self, timeout_s: float) -> str:
        """Waits for ssesub's ``ready`` line; returns it. Raises BenchError on timeout/exit."""
        if not self._ready.wait(timeout_s):
            raise BenchError(f"{self.name}: not ready after {timeout_s:.0f} s")
        for line in self._err:
            if line.startswith("ready"):
                return line.strip()
        raise BenchError(f"{self.name} exited before it was ready: {self.stderr_tail()}")

    def wait_complete(self, timeout_s: float) -> bool:
        """Waits for ssesub's ``complete`` line (with --hold); False on timeout."""
        return self._complete.wait(timeout_s)

    def stderr_tail(self, n: int = 5) -> str:
        return "".join(self._err[-n:]).strip()

    def finish(self, timeout_s: float) -> dict[str, Any]:
        """Waits up to ``timeout_s`` for a normal exit, then SIGTERM (the tool still reports)."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._registry.kill(self.proc, signal.SIGTERM, grace_s=10.0)
        return self._result()

    def stop(self) -> dict[str, Any]:
        """Ends the tool now (SIGTERM) and returns its report."""
        self._registry.kill(self.proc, signal.SIGTERM, grace_s=10.0)
        return self._result()

    def _result(self) -> dict[str, Any]:
        self._registry.kill(self.proc)  # reaps and removes it from the registry
        for t in self._threads:
            t.join(timeout=5)
        for line in reversed(self._out):
            if line.startswith("{"):
                try:
                    result: dict[str, Any] = json.loads(line)
                except json.JSONDecodeError:
                    break
                return result
        raise BenchError(
            f"{self.name} printed no result (exit {self.proc.returncode}): {self.stderr_tail()}"
        )


# ---- server cost from /proc -------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if not os.path.exists(f"/proc/{p}"):
            continue
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes, in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            # the command name may contain spaces: fields start after the last ')'
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_kib(pids: Iterable[int]) -> int:
    """Sum of VmRSS of the processes, in KiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Share of all cores that was busy between two host_cpu() samples, in %."""
    dt = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / dt if dt > 0 else None


def wait_port(port: int, timeout_s: float, host: str = "127.0.0.1") -> bool:
    """True once a TCP connect to host:port succeeds."""
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            try:
                s.connect((host, port))
                return True
            except OSError:
                time.sleep(0.05)
    return False


def free_port() -> int:
    """A currently free loopback TCP port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
