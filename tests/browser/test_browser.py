"""The browser client and the demo page in a real Chromium against a real broker process.

Every test waits for conditions in the page (``Page.wait_for`` polls a JavaScript expression
under a timeout); none sleeps. The demo page exposes what it saw as ``window.brokerDemo``
(``events``, ``notices``, ``statuses``, ``status``, ``transport``). Each test uses its own topic,
so tests sharing the module's broker cannot see each other's events.
"""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

pytestmark = pytest.mark.browser

KOREAN = "안녕하세요, 세계"
JOB_STAGES = [
    ("started", 0),
    ("exact_match", 0.2),
    ("vector_search", 0.4),
    ("graph", 0.6),
    ("rerank", 0.8),
    ("generating", 0.9),
    ("complete", 1),
]


def unique_topic(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def publish(broker: Any, topic: str, data: Any, event: str | None = None) -> str:
    """Publish from outside the browser; text as text/plain, anything else as JSON. -> id"""
    url = f"{broker.url}/topics/{quote(topic)}"
    if isinstance(data, str):
        body, content_type = data.encode(), "text/plain; charset=utf-8"
    else:
        body, content_type = json.dumps(data, ensure_ascii=False).encode(), "application/json"
    response = httpx.post(
        url,
        content=body,
        params={"event": event} if event else None,
        headers={"Content-Type": content_type},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def open_demo(
    new_page: Any, broker: Any, topics: list[str], *, no_event_source: bool = False, **query: Any
) -> Any:
    """Open the demo page subscribed to ``topics`` and wait until its stream is open."""
    page = new_page(no_event_source=no_event_source)
    status = page.goto(f"{broker.url}/?{urlencode({'topics': ','.join(topics), **query})}")
    assert status == 200
    page.wait_for("window.brokerDemo && window.brokerDemo.status === 'open'")
    return page


def page_events(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("window.brokerDemo.events")


def assert_no_page_errors(page: Any) -> None:
    errors = [line for line in page.logs() if line.startswith(("pageerror", "console.error"))]
    assert errors == []


@pytest.mark.parametrize(
    ("no_event_source", "transport"),
    [
        pytest.param(False, "sse", id="eventsource"),
        pytest.param(True, "ws", id="websocket-fallback"),
    ],
)
def test_page_receives_events_in_order_with_korean_text(
    broker: Any, new_page: Any, no_event_source: bool, transport: str
) -> None:
    """Scenarios 1 and 2: EventSource, and WebSocket when ``window.EventSource`` is gone.

    The typed event checks that user events with an ``event`` type reach ``onmessage`` in
    envelope mode (named SSE events would only reach ``addEventListener``).
    """
    topic = unique_topic("browser/order")
    page = open_demo(new_page, broker, [topic], no_event_source=no_event_source)
    assert page.evaluate("typeof window.EventSource") == (
        "undefined" if no_event_source else "function"
    )
    assert page.evaluate("window.brokerDemo.transport") == transport
    sent = [
        (KOREAN, None),
        ("first line\nsecond line\n", None),
        ({"greeting": KOREAN, "n": 3, "nested": [1, None, True]}, "greeting"),
        ("  leading spaces survive", "note"),
        ("", None),
        ("last ✓", None),
    ]
    ids = [publish(broker, topic, data, event) for data, event in sent]

    page.wait_for(f"window.brokerDemo.events.length >= {len(sent)}")
    received = page_events(page)
    assert [(e["id"], e["topic"], e["event"], e["data"], e["transport"]) for e in received] == [
        (id_, topic, event, data, transport) for id_, (data, event) in zip(ids, sent, strict=True)
    ]
    assert KOREAN in page.evaluate("document.getElementById('event-log').textContent")
    assert page.evaluate("document.getElementById('conn-transport').dataset.transport") == transport
    if no_event_source:
        first = page.evaluate("window.brokerDemo.statuses[0]")
        assert (first["status"], first["transport"]) == ("fallback", "ws")
    assert_no_page_errors(page)


def test_page_reconnects_after_broker_restart_and_replays_history(
    own_broker: Any, new_page: Any
) -> None:
    """Scenario 3: restart on the same port; events published while the page is away arrive
    from history after it reconnects by itself, and none arrives twice."""
    topic = unique_topic("browser/restart")
    page = open_demo(new_page, own_broker, [topic])
    before = [publish(own_broker, topic, f"before {i}") for i in range(3)]
    page.wait_for("window.brokerDemo.events.length >= 3")
    # A stream starts with broker.start, or broker.reset when the resume point is not exact.
    starts = "window.brokerDemo.notices.filter(n => /^broker[.](start|reset)$/.test(n.type)).length"
    starts_before = page.evaluate(starts)

    own_broker.restart()
    after = [publish(own_broker, topic, f"after {i} {KOREAN}") for i in range(3)]

    expected = json.dumps(before + after)
    page.wait_for(
        f"""(() => {{
            const ids = window.brokerDemo.events.map(e => e.id);
            return {expected}.every(id => ids.includes(id)) && window.brokerDemo.status === 'open';
        }})()""",
        timeout=30,
    )
    received = page_events(page)
    assert [e["id"] for e in received] == before + after
    assert [e["data"] for e in received[3:]] == [f"after {i} {KOREAN}" for i in range(3)]
    statuses = [s["status"] for s in page.evaluate("window.brokerDemo.statuses")]
    assert "reconnecting" in statuses
    assert "broker.shutdown" in [n["type"] for n in page.evaluate("window.brokerDemo.notices")]
    assert page.evaluate(starts) > starts_before  # a new stream, on the restarted broker

    # Still live on the new connection, still without duplicates.
    last = publish(own_broker, topic, "live again")
    page.wait_for(f"window.brokerDemo.events.some(e => e.id === {json.dumps(last)})")
    ids = [e["id"] for e in page_events(page)]
    assert ids == [*before, *after, last]


def test_client_surfaces_reset_notice_for_unknown_resume_point(broker: Any, new_page: Any) -> None:
    """``/client.js`` is served and importable, and a resume point the broker cannot honour
    reaches ``onNotice`` as ``broker.reset`` while the stream still opens."""
    topic = unique_topic("browser/reset")
    page = new_page()
    assert page.goto(f"{broker.url}/?topics={topic}") == 200
    page.evaluate(
        f"""import('/client.js').then(({{ subscribe }}) => {{
            window.resetNotices = [];
            window.resetSub = subscribe('', [{json.dumps(topic)}], {{
                lastEventId: 'no-such-id',
                onNotice: (n) => window.resetNotices.push(n),
            }});
        }})"""
    )
    notice = page.wait_for("window.resetNotices.find(n => n.type === 'broker.reset')")
    assert notice["data"]["requested"] == "no-such-id"
    page.wait_for("window.resetSub.status === 'open'")
    assert page.evaluate("window.resetSub.close(), window.resetSub.status") == "closed"


def test_demo_progress_bar_screenshot(broker: Any, new_page: Any, tmp_path: Path) -> None:
    """Scenario 4: progress events drive the bar; a screenshot mid-way shows it 40 % full."""
    topic = unique_topic("jobs")
    page = open_demo(new_page, broker, [topic])
    for stage, progress in JOB_STAGES[:3]:  # started, exact_match, vector_search
        publish(broker, topic, {"job": "shot", "stage": stage, "progress": progress}, "progress")
    page.wait_for(
        """(() => {
            const bar = document.getElementById('job-progress');
            const fill = bar.querySelector('.fill').getBoundingClientRect().width;
            return bar.getAttribute('aria-valuenow') === '40'
                && Math.abs(fill / bar.getBoundingClientRect().width - 0.4) < 0.01;
        })()"""
    )
    assert page.evaluate("document.getElementById('job-stage').textContent") == "vector search"

    full = tmp_path / "demo-progress.png"
    assert page.screenshot(full) > 10_000
    width, height, pixels = decode_png(full.read_bytes())
    assert (width, height) == (1280, 900)
    non_white = sum(1 for p in pixels if p[:3] != (255, 255, 255))
    assert non_white > 0.05 * width * height

    bar = tmp_path / "progress-bar.png"
    page.screenshot(bar, selector="#job-progress")
    width, height, pixels = decode_png(bar.read_bytes())
    middle = pixels[(height // 2) * width : (height // 2 + 1) * width]
    filled = sum(1 for r, g, b, *_ in middle if b > r + 60)  # the accent blue
    assert 0.35 < filled / width < 0.45


def test_demo_simulate_job_button_walks_every_stage(broker: Any, new_page: Any) -> None:
    """The demo's own job simulation publishes the stages with ``publish()`` and the bar
    follows them to 100 %."""
    topic = unique_topic("jobs")
    page = open_demo(new_page, broker, [topic], step_ms=20)
    page.click("#simulate-job")
    page.wait_for(
        "document.getElementById('job-progress').dataset.stage === 'complete'"
        " && document.getElementById('job-progress').getAttribute('aria-valuenow') === '100'"
    )
    progress = [e for e in page_events(page) if e["event"] == "progress"]
    assert [(e["topic"], e["data"]["stage"], e["data"]["progress"]) for e in progress] == [
        (topic, stage, value) for stage, value in JOB_STAGES
    ]


def test_demo_publish_form_round_trips(broker: Any, new_page: Any) -> None:
    """Scenario 5: the form publishes text and JSON; the page receives what it published."""
    topic = unique_topic("browser/form")
    page = open_demo(new_page, broker, [topic])
    page.fill("#pub-topic", topic)
    page.fill("#pub-event", "note")
    page.fill("#pub-data", f"{KOREAN} ✓")
    page.click("#pub-submit")
    text_id = page.wait_for("document.getElementById('pub-result').dataset.id")
    event = page.wait_for(f"window.brokerDemo.events.find(e => e.id === {json.dumps(text_id)})")
    assert (event["topic"], event["event"], event["data"]) == (topic, "note", f"{KOREAN} ✓")

    page.fill("#pub-event", "")
    page.check("#pub-json")
    page.fill("#pub-data", '{"items": [1, 2], "name": "세계"}')
    page.click("#pub-submit")
    json_id = page.wait_for(
        f"(id => id !== {json.dumps(text_id)} && id)"
        "(document.getElementById('pub-result').dataset.id)"
    )
    event = page.wait_for(f"window.brokerDemo.events.find(e => e.id === {json.dumps(json_id)})")
    assert (event["event"], event["data"]) == (None, {"items": [1, 2], "name": "세계"})
    assert [e["id"] for e in page_events(page)] == [text_id, json_id]
    assert_no_page_errors(page)


def decode_png(png: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) to pixels."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert (depth, interlace) == (8, 0), header
    assert color in (2, 6), header
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    # Bytewise addition mod 256 of whole rows at once, for the common "up" filter.
    high = int.from_bytes(b"\x80" * stride, "big")
    low = int.from_bytes(b"\x7f" * stride, "big")
    pixels: list[tuple[int, ...]] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 2:
            a, b = int.from_bytes(line, "big"), int.from_bytes(previous, "big")
            line = bytearray((((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(stride, "big"))
        elif kind in (1, 3, 4):
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up, up_left = previous[i], previous[i - bpp] if i >= bpp else 0
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + up) // 2
                else:
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + predictor) & 0xFF
        pixels.extend(zip(*(line[c::bpp] for c in range(bpp)), strict=True))
        previous = line
    return width, height, pixels
