"""Fixtures for the examples' tests: a real broker process, Chromium, and async page helpers.

The broker is a real ``python -m broker run`` process, as ``make run`` starts it (one per
session; every test uses its own topics). Chromium comes from ``tests/browser/conftest.py``
(re-exported below). Its driver is a blocking RPC, so trio tests call it through
:class:`AsyncPage`, which runs each call in a worker thread: the test's own trio tasks (an
example's service, a publisher) keep running while the browser waits for a condition.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import trio
from broker_client import ServerSentEvent, SSEParser

from tests.browser.conftest import DriverError, Page, chromium, new_page  # re-exported fixtures
from tests.support.servers import BrokerProcess

__all__ = ["AsyncPage", "broker_process", "chromium", "new_page", "open_page"]


@pytest.fixture(scope="session")
def broker_process() -> Iterator[BrokerProcess]:
    """A real broker process shared by the examples' tests (unique topics each)."""
    process = BrokerProcess()
    process.start()
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.stop(signal.SIGTERM)


class AsyncPage:
    """A Chromium page for trio tests: every driver call runs in a worker thread.

    Calls must not overlap (the driver answers one command at a time): await each one.
    """

    def __init__(self, page: Page) -> None:
        self.page = page

    async def goto(self, url: str) -> int | None:
        return await trio.to_thread.run_sync(self.page.goto, url)

    async def evaluate(self, expression: str) -> Any:
        return await trio.to_thread.run_sync(self.page.evaluate, expression)

    async def wait_for(self, expression: str, *, timeout: float = 15) -> Any:
        """Poll a JavaScript expression in the page until it is truthy; return its value.

        Raises:
            DriverError: it stayed falsy for ``timeout`` seconds; the message shows what the
                page's ``window.example`` saw.
        """
        try:
            return await trio.to_thread.run_sync(
                lambda: self.page.wait_for(expression, timeout=timeout)
            )
        except DriverError as error:
            seen = await self.evaluate(_DESCRIBE_EXAMPLE)
            raise DriverError(f"{error}\n--- window.example ---\n{seen}") from None

    async def click(self, selector: str) -> None:
        await trio.to_thread.run_sync(self.page.click, selector)

    async def errors(self) -> list[str]:
        """Uncaught errors and console.error lines the page logged (known noise excepted)."""
        logs = await trio.to_thread.run_sync(self.page.logs)
        return [line for line in logs if line.startswith(("pageerror", "console.error"))]

    async def example(self, path: str = "") -> Any:
        """The page's ``window.example`` (or a path inside it, e.g. ``"statuses"``)."""
        return await self.evaluate(f"window.example{'.' + path if path else ''}")


_DESCRIBE_EXAMPLE = """(() => {
    const ex = window.example;
    if (!ex) return 'no window.example';
    const brief = (x) => JSON.stringify(x).slice(0, 300);
    return JSON.stringify({
        status: ex.subscription && ex.subscription.status,
        stats: ex.subscription && ex.subscription.stats,
        statuses: (ex.statuses || []).slice(-12),
        notices: (ex.notices || []).slice(-8).map((n) => [n.type, brief(n.data)]),
        events: (ex.events || []).slice(-12).map((e) => [e.id, e.event, brief(e.data)]),
    }, null, 1);
})()"""


@pytest.fixture
def open_page(new_page: Callable[..., Page]) -> Callable[[str], Awaitable[AsyncPage]]:
    """``await open_page(url)``: a fresh page that has loaded ``url`` (status 200)."""

    async def factory(url: str) -> AsyncPage:
        page = AsyncPage(await trio.to_thread.run_sync(new_page))
        status = await page.goto(url)
        assert status == 200, f"{url}: HTTP {status}"
        return page

    return factory


async def broker_stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{url}/stats")
        response.raise_for_status()
        return dict(response.json())


async def read_stream(
    url: str, *, headers: dict[str, str] | None = None
) -> tuple[int, list[ServerSentEvent]]:
    """GET an SSE stream with a plain HTTP client and read it until the broker ends it.

    Returns:
        The status and the events (none for a ``204``). Only for streams that end (a closed
        topic): the caller's ``fail_after`` bounds the rest.
    """
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", url, headers=headers) as response,
    ):
        async for chunk in response.aiter_bytes():
            events.extend(parser.feed(chunk))
        return response.status_code, events


def js(value: Any) -> str:
    """A Python value as a JavaScript literal."""
    return json.dumps(value, ensure_ascii=False)
