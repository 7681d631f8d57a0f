"""The admin page in a real Chromium against a real broker process: the slow list, the
disconnect button and the charts (``window.brokerAdmin`` exposes what the page shows)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.servers import BrokerProcess

pytestmark = pytest.mark.browser

#: Per chart: is its newest point (the dot at "now") painted in its series colour?
LINE_DRAWN = """
(() => ['publishes', 'deliveries', 'connections', 'drops'].map((name) => {
  const canvas = document.getElementById('chart-' + name);
  const [x, y, colour] = window.brokerAdmin.lastPoints[name];
  const want = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
  const data = canvas.getContext('2d').getImageData(x, y, 1, 1).data;
  return data[3] > 200 && want.every((c, k) => Math.abs(data[k] - c) < 40);
}))()
"""


@pytest.fixture
def small_queue_broker() -> Iterator[BrokerProcess]:
    process = BrokerProcess(env={"BROKER_STREAM_QUEUE_EVENTS": "16"})
    process.start()
    try:
        yield process
    finally:
        process.stop()


def stalled_subscriber(url: str, topic: str) -> socket.socket:
    """An SSE client that never reads (a tiny receive buffer fills at once)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /topics/{topic}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def test_a_stalled_client_tops_the_slow_list_and_the_button_disconnects_it(
    new_page: Any, small_queue_broker: BrokerProcess, tmp_path: Any
) -> None:
    broker = small_queue_broker
    page = new_page()
    assert page.goto(f"{broker.url}/admin/") == 200
    page.wait_for("window.brokerAdmin && window.brokerAdmin.status === 'live'")

    stalled = stalled_subscriber(broker.url, "stall/here")
    port = stalled.getsockname()[1]
    try:
        with httpx.Client(base_url=broker.url, timeout=10) as client:
            pad = "x" * 32_000
            for n in range(60):
                assert client.post("/topics/stall/here", json={"n": n, "pad": pad}).is_success
        remote = f"127.0.0.1:{port}"
        connection_id = page.wait_for(
            "(() => { const top = window.brokerAdmin.slow[0];"
            f" return top && top.remote === '{remote}' && top.lag_seconds > 0 && top.id; }})()",
            timeout=5,
        )
        assert page.evaluate("document.querySelector('#slow-table tbody tr').dataset.id") == str(
            connection_id
        )

        # The charts draw: each canvas has its series' line where its newest point is.
        page.wait_for("window.brokerAdmin.samples.length >= 2 && window.brokerAdmin.drawn > 0")
        assert page.evaluate(LINE_DRAWN) == [True, True, True, True]
        assert page.screenshot(tmp_path / "admin.png") > 10_000

        button = f"button[data-disconnect='{connection_id}']"
        page.click(button)  # arms it ("sure?")
        page.click(button)
        page.wait_for(f"window.brokerAdmin.disconnected.includes({connection_id})", timeout=5)
        page.wait_for(
            f"!window.brokerAdmin.slow.some((row) => row.id === {connection_id})", timeout=5
        )
        stalled.settimeout(5)
        received = b""
        while chunk := stalled.recv(1 << 20):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
    finally:
        stalled.close()
    assert [line for line in page.logs() if line.startswith("pageerror")] == []


def test_with_auth_the_page_asks_for_an_admin_token(new_page: Any) -> None:
    import time

    import jwt

    secret = "a-shared-secret-that-is-long-enough-32"
    process = BrokerProcess(env={"BROKER_AUTH_SECRET": secret})
    process.start()
    try:
        page = new_page()
        assert page.goto(f"{process.url}/admin/") == 200
        page.wait_for("!document.getElementById('auth').hidden", timeout=5)
        token = jwt.encode({"admin": True, "exp": time.time() + 600}, secret, algorithm="HS256")
        page.fill("#token", token)
        page.click("#token-form button")
        page.wait_for("window.brokerAdmin && window.brokerAdmin.status === 'live'", timeout=5)
        page.wait_for("document.getElementById('auth').hidden", timeout=5)
    finally:
        process.stop()
