"""Helpers for the durable store's tests: real broker processes on real data directories."""

from __future__ import annotations

import httpx
import trio

from tests.support.servers import BrokerProcess
from tests.support.sse_client import SseEvent, open_sse


def durable_broker(path: str, **env: str) -> BrokerProcess:
    """A ``broker run`` process keeping its events under ``path``."""
    return BrokerProcess(
        env={
            "BROKER_STORAGE_KIND": "durable",
            "BROKER_STORAGE_PATH": path,
            "BROKER_HISTORY_SIZE": "100000",
            **env,
        }
    )


async def position(url: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(url + "/stats")).json()["position"]


async def replay(
    url: str, topic: str, resume_from: str | None, until: str
) -> tuple[SseEvent, list[SseEvent]]:
    """The notice and every event of ``topic`` after ``resume_from`` up to the id ``until``."""
    headers = {"Last-Event-ID": resume_from} if resume_from else {}
    stream = await open_sse(url, f"/topics/{topic}/events", headers)
    try:
        notice = await stream.next_event()
        assert notice is not None
        events: list[SseEvent] = []
        if notice.id == until:
            return notice, events
        while True:
            event = await stream.next_event()
            assert event is not None
            if event.event and event.event.startswith("broker."):
                continue
            events.append(event)
            if event.id == until:
                return notice, events
    finally:
        await stream.aclose()


async def publish(client: httpx.AsyncClient, url: str, topic: str, data: str, **query: str):
    return await client.post(f"{url}/topics/{topic}", content=data, params=query)


async def sleep_until(predicate, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
