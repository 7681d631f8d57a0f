"""The browser client returns to SSE after a fallback that broker downtime caused.

A broker restart makes SSE attempts fail; three in a row make the client probe WebSocket,
and the probe opens because the broker is back, not because SSE is blocked. The client must
not stay on WebSocket for good: it moves back to SSE, with no id twice and none missed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.browser


def publish(broker: Any, topic: str, text: str) -> str:
    answer = httpx.post(f"{broker.url}/topics/{topic}", content=text.encode(), timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def test_client_moves_back_to_sse_after_a_restart_fallback(own_broker: Any, new_page: Any) -> None:
    topic = f"browser/back/{uuid.uuid4().hex[:10]}"
    page = new_page()
    assert page.goto(f"{own_broker.url}/healthz") == 200  # any page of the broker's origin
    # The third failed SSE attempt schedules the WebSocket probe 3 s later: time enough to
    # bring the broker back, so that the probe opens. SSE is tried again 1.5 s after that.
    page.evaluate(
        f"""import('/client.js').then(({{ subscribe }}) => {{
            window.t = {{ events: [], statuses: [] }};
            window.t.sub = subscribe('', [{json.dumps(topic)}], {{
                backoff: [200, 200, 3000], jitter: 0, sseRetryMs: 1500,
                onEvent: (e) => window.t.events.push(e),
                onStatus: (s, d) => window.t.statuses.push([s, d.transport, d.reason]),
            }});
        }})"""
    )
    opened_on = "window.t.sub.status === 'open' && window.t.sub.transport === '{}'"
    page.wait_for(opened_on.format("sse"))
    ids = [publish(own_broker, topic, f"before {i}") for i in range(3)]
    page.wait_for("window.t.events.length === 3")

    own_broker.stop()
    page.wait_for(
        "window.t.statuses.some(([s, , r]) => s === 'fallback' && /trying WebSocket/.test(r))"
    )
    own_broker.start()
    page.wait_for(opened_on.format("ws"), timeout=15)
    ids += [publish(own_broker, topic, f"on ws {i}") for i in range(2)]
    page.wait_for("window.t.events.length === 5")

    page.wait_for(opened_on.format("sse"), timeout=15)
    ids += [publish(own_broker, topic, f"back on sse {i}") for i in range(2)]
    page.wait_for("window.t.events.length === 7")

    events = page.evaluate("window.t.events")
    assert [e["id"] for e in events] == ids
    assert [e["transport"] for e in events] == ["sse"] * 3 + ["ws"] * 2 + ["sse"] * 2
    statuses = page.evaluate("window.t.statuses")
    assert ["open", "sse", "back on SSE"] in statuses
    assert page.evaluate("window.t.sub.close(), window.t.sub.status") == "closed"
