"""The examples as a set: one command each (``--help`` works), listed in
``examples/README.md``, linked from the demo page, their pages served by the broker."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

EXAMPLES = ("job_progress", "event_browser", "token_stream", "resilient_client")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", EXAMPLES)
def test_one_command_per_example(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    main = importlib.import_module(f"examples.{name}.__main__").main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert f"python -m examples.{name}" in capsys.readouterr().out
    readme = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    assert f"`.venv/bin/python -m examples.{name}`" in readme


async def test_demo_page_links_every_example_and_the_broker_serves_them(
    broker_process: Any,
) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=broker_process.url, timeout=10) as http:
            demo = (await http.get("/")).text
            for name in EXAMPLES:
                assert f'href="/examples/{name}/"' in demo
                page = await http.get(f"/examples/{name}/")
                assert page.status_code == 200
                assert page.headers["content-type"].startswith("text/html")
                assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css|json))"', page.text)
                assert f"/examples/{name}/page.js" in assets
                for asset in assets:
                    assert (await http.get(asset)).status_code == 200, asset
                script = (await http.get(f"/examples/{name}/page.js")).text
                assert "from '/client.js'" in script
