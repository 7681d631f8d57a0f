"""A plain HTML form publishes, in a real Chromium against a real broker process.

No JavaScript sends the form: the browser encodes it (``application/x-www-form-urlencoded``)
and navigates to the broker's ``202`` answer, as a page without any client code would.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.browser


def test_a_plain_html_form_publishes(broker: Any, new_page: Any) -> None:
    topic = f"browser/form/{uuid.uuid4().hex[:10]}"
    watcher = new_page()
    assert watcher.goto(f"{broker.url}/?topics={topic}") == 200
    watcher.wait_for("window.brokerDemo && window.brokerDemo.status === 'open'")

    page = new_page()
    assert page.goto(f"{broker.url}/healthz") == 200  # any page of the broker's origin
    page.evaluate(
        f"""(() => {{
            document.body.innerHTML = `
              <form method="post" action="/topics/{topic}">
                <input name="data"><input name="event" value="note">
                <input type="checkbox" name="retain"><button>Publish</button>
              </form>`;
        }})()"""
    )
    page.fill("input[name=data]", "from a form, 값 & more")
    page.check("input[name=retain]")
    page.click("button")
    answer = page.wait_for(
        "document.contentType === 'application/json' && JSON.parse(document.body.innerText)"
    )
    assert answer["topic"] == topic

    event = watcher.wait_for(
        f"window.brokerDemo.events.find(e => e.id === {json.dumps(answer['id'])})"
    )
    assert (event["event"], event["data"]) == ("note", "from a form, 값 & more")
