"""A page subscribes with the ``broker_token`` cookie, in a real Chromium against a broker
process with auth on; the token comes from the real ``broker token`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.servers import ROOT, BrokerProcess

pytestmark = pytest.mark.browser

SECRET = "a-shared-secret-that-is-long-enough-32"


def mint(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env |= {"BROKER_AUTH_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "broker", "token", *args],
        capture_output=True, text=True, check=True, env=env, cwd=ROOT / "tests", timeout=30,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def auth_broker() -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        env={"BROKER_AUTH_SECRET": SECRET, "BROKER_AUTH_ANONYMOUS_SUBSCRIBE": "public/**"}
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_a_page_subscribes_with_the_token_cookie(auth_broker: Any, new_page: Any) -> None:
    reader = mint("--sub", "page", "--subscribe", "jobs/1")
    writer = mint("--sub", "worker", "--publish", "jobs/**")
    page = new_page()
    assert page.goto(f"{auth_broker.url}/healthz") == 200
    # What the application serving the page does with Set-Cookie.
    page.evaluate(f"document.cookie = 'broker_token={reader}; path=/; SameSite=Strict'")
    page.evaluate(
        """import('/client.js').then(({ subscribe }) => {
            window.t = { events: [] };
            window.t.allowed = subscribe('', ['jobs/1'], {
                onEvent: (e) => window.t.events.push(e),
            });
            window.t.denied = subscribe('', ['jobs/2'], { maxAttempts: 1 });
        })"""
    )
    page.wait_for("window.t && window.t.allowed.status === 'open'")
    answer = httpx.post(
        f"{auth_broker.url}/topics/jobs/1",
        data={"data": "for the page"},
        headers={"Authorization": f"Bearer {writer}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    event = page.wait_for(f"window.t.events.find(e => e.id === {json.dumps(answer.json()['id'])})")
    assert event["data"] == "for the page"
    page.wait_for("window.t.denied.status === 'failed'")  # jobs/2: not in the token
    page.evaluate("window.t.allowed.close(), window.t.denied.close()")
