"""Fault injection for the fault-isolation tests (issue 17): a function that fails once,
the internal-error counters as /metrics and /stats report them, a bystander subscriber."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from broker.core.guard import WHERES
from broker.server import RunningServer
from tests.support.sse_client import SseStream, open_sse


class Injected(RuntimeError):
    """The fault the tests inject."""


def fail_once(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, when: Callable[..., bool] | None = None
) -> list[int]:
    """Make ``owner.name`` raise :class:`Injected` at its first call (for which ``when`` holds).

    Returns a one-item list counting the faults raised.
    """
    original = getattr(owner, name)
    raised = [0]

    def faulty(*args: Any, **kwargs: Any) -> Any:
        if not raised[0] and (when is None or when(*args, **kwargs)):
            raised[0] += 1
            raise Injected(f"injected into {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, faulty)
    return raised


async def internal_errors(server: RunningServer) -> dict[str, float]:
    """``broker_internal_errors_total`` by ``where``, scraped from ``/metrics`` (a new
    connection each time: the broker still accepts them), checked against ``/stats``."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        text = (await client.get("/metrics")).text
        stats = (await client.get("/stats")).json()["internal_errors"]
    found = {
        where: float(value)
        for where, value in re.findall(
            r'^broker_internal_errors_total\{where="(\w+)"\} (\S+)$', text, re.M
        )
    }
    assert found == {where: float(count) for where, count in stats.items()}
    return found


async def bystander_keeps_receiving(server: RunningServer, watcher: SseStream, n: int) -> None:
    """A publish on a new connection reaches the subscriber that was open all along."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        answer = await client.post("/topics/watch", content=f"after fault {n}".encode())
        assert answer.status_code == 202, answer.text
    [event] = await watcher.events(1)
    assert event.data == f"after fault {n}"


async def open_watcher(server: RunningServer) -> SseStream:
    watcher = await open_sse(server.url, "/topics/watch/events")
    assert watcher.status == 200
    assert (await watcher.next_event()).event == "broker.start"
    return watcher


def only(where: str, count: int = 1) -> dict[str, float]:
    counts = dict.fromkeys(WHERES, 0.0)
    counts[where] = float(count)
    return counts
