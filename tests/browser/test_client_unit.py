"""The JS client's own unit tests (``clients/js/test/``, ``node:test`` with fake transports
and timers), run from pytest so ``make test`` covers them. Needs node, not Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CLIENT_TESTS = Path(__file__).resolve().parents[2] / "clients" / "js" / "test"


def test_js_client_unit_tests() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the JS client tests need Node 20+")
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(CLIENT_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
