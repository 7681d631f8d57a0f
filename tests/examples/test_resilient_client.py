"""Example 4, resilient client (``examples/resilient_client``): backoff, heartbeat timeout,
manual retry, and the connection-quality panel, against a broker process of the test's own
that it pauses, stops and starts again.

The broker sends a visible heartbeat after 1 s of silence (so the page's heartbeat timeout
is 2.5 s) and asks clients to come back after 0.25 to 0.75 s when it stops.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from broker_client import BrokerClient, Event

from examples._shared import new_id
from examples.resilient_client.ticks import TICK_EVENT, publish_ticks
from tests.support.servers import BrokerProcess

HEARTBEAT_SECONDS = 1


async def test_ticks_carry_their_send_time(broker_process: Any) -> None:
    """The publisher's ticks arrive in order with a send time a subscriber can age; a tick
    it cannot publish (broker away) is reported, not fatal."""
    topic = f"ticks/{new_id()}"
    with trio.fail_after(20):
        async with (
            BrokerClient(broker_process.url) as client,
            client.subscribe(topic) as events,
        ):
            assert await publish_ticks(client, topic, interval=0, count=3) == 3
            ticks = []
            async for item in events:
                if isinstance(item, Event):
                    ticks.append(item)
                    if len(ticks) == 3:
                        break
        errors: list[str] = []
        async with BrokerClient("http://127.0.0.1:9") as nowhere:
            await publish_ticks(nowhere, topic, interval=0, count=2, on_error=errors.append)
    assert [(t.event, t.data["seq"]) for t in ticks] == [(TICK_EVENT, i) for i in range(3)]
    assert ticks[0].data["sent_at"] <= ticks[2].data["sent_at"]
    assert len(errors) == 2
    assert "tick 0 not published" in errors[0]


@pytest.fixture
def own_broker() -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        env={
            "BROKER_STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "BROKER_STREAM_RETRY_MS": "500",
        }
    )
    process.start()
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.proc.send_signal(signal.SIGCONT)
            process.stop()


@pytest.mark.browser
async def test_page_survives_a_pause_gives_up_and_retries(
    own_broker: BrokerProcess, open_page: Any
) -> None:
    """Latency and ages on the panel; a paused broker (SIGSTOP) is detected by the heartbeat
    timeout and the page reconnects when it resumes; a stopped broker makes it give up after
    ``max_attempts`` (status ``failed``, retry button); the button reconnects once the broker
    is back, and ticks flow again."""
    topic = f"ticks/{new_id()}"
    url = own_broker.url
    query = f"topic={topic}&max_attempts=2&backoff=300,600&transport=sse"
    assert own_broker.proc is not None
    with trio.fail_after(90):
        page = await open_page(f"{url}/examples/resilient_client/?{query}")
        await page.wait_for("window.example.subscription.status === 'open'")
        async with BrokerClient(url) as client:
            await publish_ticks(client, topic, interval=0.05, count=5)
        await page.wait_for("window.example.latencies.length === 5")
        latencies = await page.evaluate("window.example.latencies")
        assert all(0 <= ms < 5000 for ms in latencies)
        await page.wait_for(
            "/^\\d+ ms$/.test(document.getElementById('q-latency-p95').textContent)"
            " && / s ago$/.test(document.getElementById('q-last-event').textContent)"
            " && document.getElementById('q-events').textContent === '5'"
        )

        # Heartbeat timeout: a paused broker keeps the socket open but sends nothing.
        await page.wait_for(
            "window.example.subscription.stats.heartbeats >= 1"
            " && document.getElementById('q-heartbeat').textContent === '2.5 s of silence'"
        )
        own_broker.proc.send_signal(signal.SIGSTOP)
        try:
            quiet = await page.wait_for(
                "window.example.statuses.find(s => s.reason === 'stream went quiet')"
            )
        finally:
            own_broker.proc.send_signal(signal.SIGCONT)
        assert quiet["status"] == "reconnecting"
        assert 270 <= quiet["delayMs"] <= 330  # 300 ms ± 10 %
        await page.wait_for(
            "window.example.subscription.status === 'open'"
            " && window.example.subscription.stats.reconnects === 1"
        )
        assert await _text(page, "q-reconnects") == "1"

        # The broker goes away: two failed attempts in a row, then the page gives up.
        await own_broker.astop()
        await page.wait_for("window.example.subscription.status === 'failed'")
        assert await page.evaluate("document.getElementById('retry').hidden") is False
        statuses = await page.evaluate("window.example.statuses.map(s => s.status)")
        assert statuses[-3:] == ["reconnecting", "reconnecting", "failed"]
        assert await page.evaluate("window.example.subscription.stats.failures") == 2
        notices = [n["type"] for n in await page.example("notices")]
        assert "broker.shutdown" in notices  # it asked the page to come back later
        reconnects = await page.evaluate("window.example.subscription.stats.reconnects")

        # Back again; nothing happens until the button is pressed.
        await own_broker.astart()
        assert await page.evaluate("window.example.subscription.status") == "failed"
        await page.click("#retry")
        await page.wait_for(
            "window.example.subscription.status === 'open'"
            f" && window.example.subscription.stats.reconnects === {reconnects + 1}"
        )
        assert await page.evaluate("document.getElementById('retry').hidden") is True
        async with BrokerClient(url) as client:
            await publish_ticks(client, topic, interval=0.05, count=2, first_seq=5)
        await page.wait_for("window.example.latencies.length === 7")
        seqs = await page.evaluate("window.example.events.map(e => e.data.seq)")
        assert seqs == list(range(7))
        # The browser logs each refused connection while the broker was away; nothing else.
        errors = await page.errors()
        assert all("net::ERR_CONNECTION_REFUSED" in line for line in errors), errors


async def _text(page: Any, element_id: str) -> str:
    return str(await page.evaluate(f"document.getElementById('{element_id}').textContent"))
