"""Example 2, event browser (``examples/event_browser``): alerts, acks, a retained summary.

The summary service runs in the test's trio run against a real broker process; alerts and
acks are published as the generator and the page publish them. Checked: the retained summary
follows every change, a ``since`` window returns exactly the events inside it (over plain
HTTP and on the page), a late page shows the retained counts at once, and an acknowledgement
clicked on one page reaches every page and the bell.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from broker_client import BrokerClient, Event, ServerSentEvent, SSEParser

from examples._shared import new_id, page_url
from examples.event_browser.alerts import (
    SUMMARY_EVENT,
    acknowledge,
    generate_alerts,
    make_alert,
    publish_alert,
)
from examples.event_browser.summary import AlertBook, serve_summary
from tests.examples.conftest import js


def test_alert_book_counts_unacked_alerts_by_severity() -> None:
    book = AlertBook()
    alerts = [{"id": f"a{i}", "severity": s} for i, s in enumerate(["critical", "info", "info"])]
    assert [book.add(a) for a in alerts] == [True, True, True]
    assert book.add(alerts[0]) is False  # the same alert again
    assert book.add({"id": "x", "severity": "fatal"}) is False
    assert book.ack({"id": "a1"}) is True
    assert book.ack({"id": "a1"}) is False  # acks are idempotent
    assert book.ack({"id": "nope"}) is False
    assert book.add(alerts[1]) is False  # an acked alert does not come back
    summary = book.summary()
    assert (summary["unacked"], summary["total"]) == ({"critical": 1, "warning": 0, "info": 1}, 2)


class Watcher:
    """A broker_client subscription to the alerts topic, read on demand."""

    def __init__(self, events: Any) -> None:
        self.events = events
        self.summaries: list[dict[str, Any]] = []

    async def until_summary(self, total: int) -> dict[str, Any]:
        """Read until a summary with this total; return it."""
        async for item in self.events:
            if isinstance(item, Event) and item.event == SUMMARY_EVENT:
                self.summaries.append(item.data)
                if item.data["total"] == total:
                    return dict(item.data)
        raise AssertionError("the subscription ended")


async def test_service_republishes_the_summary_and_since_returns_the_window(
    broker_process: Any,
) -> None:
    topic = f"alerts/{new_id()}"
    rng = random.Random(7)
    with trio.fail_after(30):
        async with (
            BrokerClient(broker_process.url) as client,
            client.subscribe(topic) as events,
            trio.open_nursery() as nursery,
        ):
            watcher = Watcher(events)
            book = await nursery.start(serve_summary, client, topic)
            await watcher.until_summary(0)

            # The generator, then acks: one summary per change, none for a repeated ack.
            await generate_alerts(client, topic, rng=rng, interval=0, count=2)
            await watcher.until_summary(2)
            first_two = list(book.unacked)
            since = rfc3339_now()  # every event so far is before this
            inside = [make_alert(rng, "critical"), make_alert(rng, "info")]
            for alert in inside:
                await publish_alert(client, topic, alert)
            await watcher.until_summary(4)
            await acknowledge(client, topic, inside[0]["id"], by="test")
            await acknowledge(client, topic, inside[0]["id"], by="test")
            await publish_alert(client, topic, make_alert(rng, "warning"))
            last = await watcher.until_summary(4)
            assert [s["total"] for s in watcher.summaries] == [0, 1, 2, 3, 4, 3, 4]
            assert last["unacked"]["critical"] >= 1
            assert inside[0]["id"] not in book.unacked

            # A GET-only client with ?since= gets exactly the events published after it.
            marker = await client.publish(topic, "end of test", event="marker")
            window = await read_until(broker_process.url, topic, marker, since=since)
            new_ids = [e.data["id"] for e in window if e.event == "new_event"]
            assert new_ids == [*(a["id"] for a in inside), *list(book.unacked)[-1:]]
            assert not set(first_two) & set(new_ids)
            acks = [e.data["id"] for e in window if e.event == "ack_event"]
            assert acks == [inside[0]["id"]] * 2

            # A late joiner without a window gets the retained summary first.
            start, summary = await first_events(broker_process.url, topic, 2)
            assert (start.event, summary.event) == ("broker.start", SUMMARY_EVENT)
            assert json.loads(summary.data)["unacked"] == last["unacked"]
            nursery.cancel_scope.cancel()


@pytest.mark.browser
async def test_page_window_late_joiner_ack_and_bell(broker_process: Any, open_page: Any) -> None:
    """A page with ``since=T`` lists exactly the alerts after T, with the retained counts of
    all of them on the bell; a page whose window is empty still shows the counts at once;
    acknowledging on one page updates the rows, the counts and the bell on both."""
    topic = f"alerts/{new_id()}"
    rng = random.Random(11)
    with trio.fail_after(60):
        async with (
            BrokerClient(broker_process.url) as client,
            client.subscribe(topic) as events,
            trio.open_nursery() as nursery,
        ):
            watcher = Watcher(events)
            await nursery.start(serve_summary, client, topic)
            before = [make_alert(rng, "warning"), make_alert(rng, "critical")]
            for alert in before:
                await publish_alert(client, topic, alert)
            await watcher.until_summary(2)
            since = rfc3339_now()
            inside = [make_alert(rng, s) for s in ("critical", "info", "critical")]
            for alert in inside:
                await publish_alert(client, topic, alert)
            await watcher.until_summary(5)

            url = page_url(broker_process.url, "event_browser", topic=topic, since=since)
            page = await open_page(url)
            await page.wait_for(
                f"window.example.alerts.length === {len(inside)} && window.example.summary"
                " && window.example.summary.total === 5"
            )
            assert await page.evaluate("window.example.alerts.map(a => a.id)") == [
                a["id"] for a in inside
            ]
            assert await _bell(page) == "5"
            assert await page.evaluate(
                "[...document.querySelectorAll('#event-list li')].map(li => li.dataset.id)"
            ) == [a["id"] for a in reversed(inside)]  # newest first

            empty = await open_page(
                page_url(broker_process.url, "event_browser", topic=topic, since=rfc3339_now())
            )
            await empty.wait_for("window.example.summary && window.example.summary.total === 5")
            assert await empty.evaluate("window.example.events.map(e => e.event)") == [
                SUMMARY_EVENT
            ]
            assert await empty.evaluate("window.example.alerts.length") == 0
            assert await _bell(empty) == "5"
            assert await _text(empty, "count-critical") == "3"

            target = inside[2]["id"]
            await page.click(f'#event-list li[data-id="{target}"] button.ack')
            for p in (page, empty):
                await p.wait_for("window.example.summary.total === 4")
                assert await _bell(p) == "4"
            await page.wait_for(
                f"document.querySelector('#event-list li[data-id=\"{target}\"]').dataset.acked"
                " === 'true'"
            )
            acked = await page.evaluate(f"window.example.alerts.find(a => a.id === {js(target)})")
            assert (acked["acked"], acked["ackedBy"]) == (True, "browser")
            assert await _text(page, "count-critical") == "2"
            for p in (page, empty):
                assert await p.errors() == []
            nursery.cancel_scope.cancel()


async def _bell(page: Any) -> str:
    return await _text(page, "bell-count")


async def _text(page: Any, element_id: str) -> str:
    return str(await page.evaluate(f"document.getElementById({js(element_id)}).textContent"))


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def read_until(base_url: str, topic: str, marker_id: str, *, since: str) -> list[Event]:
    """Events of a fresh ``?since=`` stream (plain HTTP), up to the one with ``marker_id``."""
    url = f"{base_url}/topics/{quote(topic)}/events"
    parser, seen = SSEParser(), []
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", url, params={"since": since}) as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            for sse in parser.feed(chunk):
                if sse.event.startswith("broker."):
                    continue
                data: Any = json.loads(sse.data) if sse.data.startswith("{") else sse.data
                seen.append(Event(id=sse.id, topic=topic, event=sse.event, data=data))
                if sse.id == marker_id:
                    return seen
    raise AssertionError("the stream ended before the marker")


async def first_events(base_url: str, topic: str, count: int) -> list[ServerSentEvent]:
    """The first ``count`` events of a fresh live stream (plain HTTP)."""
    url = f"{base_url}/topics/{quote(topic)}/events"
    parser, seen = SSEParser(), []
    async with httpx.AsyncClient(timeout=10) as http, http.stream("GET", url) as response:
        async for chunk in response.aiter_bytes():
            seen.extend(parser.feed(chunk))
            if len(seen) >= count:
                return seen[:count]
    raise AssertionError("the stream ended early")
