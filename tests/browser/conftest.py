"""Fixtures for the real-browser tests: a real broker process and Chromium driven over RPC.

Chromium is Debian's ``/usr/bin/chromium`` (override with ``$CHROMIUM``), driven by
``playwright-core`` from ``tests/browser/node_modules`` (``npm ci`` in ``tests/browser``) through
``drive.mjs``, a JSON-lines RPC over the node process's stdin/stdout. One Chromium serves the
whole session; every test gets fresh browser contexts (no shared cookies or cache), and every
page is closed in the fixture's teardown.

Tests that need Chromium are skipped only when it is missing. A missing ``node`` or
``node_modules`` is a setup error and fails loudly, so CI cannot go green by accident.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

HERE: Final = Path(__file__).resolve().parent
CHROMIUM: Final = os.environ.get("CHROMIUM", "/usr/bin/chromium")
STARTUP_TIMEOUT_SECONDS: Final = 60
RPC_MARGIN_SECONDS: Final = 20  # on top of a command's own timeout, before we call node hung


class DriverError(AssertionError):
    """A browser command failed; the message carries the page's recent console output."""


class Chromium:
    """One node ``drive.mjs`` process holding one Chromium; see that file for the ops."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not installed: the browser tests need Node 20+")
        if not (HERE / "node_modules" / "playwright-core").is_dir():
            pytest.fail(f"playwright-core is not installed: run `npm ci` in {HERE}")
        self._stderr = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (closed in close())
        self._proc = subprocess.Popen(
            [node, str(HERE / "drive.mjs"), CHROMIUM],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_task, daemon=True)
        self._reader.start()
        self._next_id = 0
        hello = self._receive(STARTUP_TIMEOUT_SECONDS)
        if not hello.get("ready"):
            raise DriverError(f"drive.mjs did not start: {hello}")
        self.version: str = hello["version"]

    def _read_task(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-4000:]

    def _receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise DriverError(
                f"drive.mjs did not answer in {timeout} s\n{self._stderr_tail()}"
            ) from None
        if line is None:
            raise DriverError(f"drive.mjs exited\n{self._stderr_tail()}")
        return json.loads(line)

    def call(self, op: str, *, timeout: float = 30, **args: Any) -> Any:
        self._next_id += 1
        command = {"id": self._next_id, "op": op, **args}
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        answer = self._receive(timeout + RPC_MARGIN_SECONDS)
        assert answer.get("id") == self._next_id, answer
        if not answer["ok"]:
            logs = "\n".join(answer.get("logs") or [])
            raise DriverError(f"{op} failed: {answer['error']}\n--- page console ---\n{logs}")
        return answer["result"]

    def new_page(self, *, no_event_source: bool = False) -> Page:
        return Page(self, self.call("newPage", noEventSource=no_event_source))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()


class Page:
    """One page in its own browser context."""

    def __init__(self, chromium: Chromium, page_id: int) -> None:
        self._chromium = chromium
        self.id = page_id

    def _call(self, op: str, **args: Any) -> Any:
        return self._chromium.call(op, page=self.id, **args)

    def goto(self, url: str) -> int | None:
        return self._call("goto", url=url)

    def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression (promises are awaited) and return its JSON value."""
        return self._call("evaluate", expression=expression)

    def wait_for(self, expression: str, *, timeout: float = 10) -> Any:
        """Poll a JavaScript expression until it is truthy; return that value."""
        return self._call(
            "waitFor", expression=expression, timeoutMs=int(timeout * 1000), timeout=timeout
        )

    def fill(self, selector: str, value: str) -> None:
        self._call("fill", selector=selector, value=value)

    def check(self, selector: str, checked: bool = True) -> None:
        self._call("check", selector=selector, checked=checked)

    def click(self, selector: str) -> None:
        self._call("click", selector=selector)

    def screenshot(self, path: Path, *, selector: str | None = None) -> int:
        return self._call("screenshot", path=str(path), selector=selector)

    def logs(self) -> list[str]:
        return self._call("logs")

    def close(self) -> None:
        self._call("closePage")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) "
            "to run the browser tests"
        )
    driver = Chromium()
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def new_page(chromium: Chromium) -> Iterator[Any]:
    """``new_page(no_event_source=False) -> Page``; every page is closed at teardown."""
    pages: list[Page] = []

    def factory(*, no_event_source: bool = False) -> Page:
        page = chromium.new_page(no_event_source=no_event_source)
        pages.append(page)
        return page

    try:
        yield factory
    finally:
        for page in pages:
            page.close()


def _start_broker(env: dict[str, str] | None = None) -> Any:
    from tests.support.servers import BrokerProcess

    broker = BrokerProcess(env=env)
    broker.start()
    return broker


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    """A real ``python -m broker run`` process shared by a module's tests (unique topics each)."""
    process = _start_broker()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def own_broker() -> Iterator[Any]:
    """A broker process of the test's own, for tests that restart it; its ``broker.shutdown``
    asks clients to come back after 0.25 to 0.75 s instead of 1.5 to 4.5 s."""
    process = _start_broker({"BROKER_STREAM_RETRY_MS": "500"})
    try:
        yield process
    finally:
        process.stop()
