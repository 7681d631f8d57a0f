"""Example 1, job progress (``examples/job_progress``): a fake search job reports its stages.

Against a real broker process: the command as a user runs it, the wire as a GET-only client
sees it (retained progress + final event for a late joiner, then the end, then 204), and the
page in Chromium: a page opened mid-job shows the current stage at once, every page ends
without reconnecting.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from broker_client import BrokerClient, ClientError, Ended, Event, SSEParser

from examples._shared import new_id, page_url
from examples.job_progress.pipeline import STAGE_NAMES, STAGES, job_topic, run_job
from tests.examples.conftest import js, read_stream
from tests.support.servers import ROOT

PROGRESS_STAGES = list(STAGE_NAMES[:-1])  # started … generating; then complete


class GatedJob:
    """A job whose stages advance only when the test says so (``await job.advance(n)``)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[None](math.inf)

    async def between_stages(self, stage: str) -> None:
        await self._receive.receive()

    def advance(self, stages: int) -> None:
        for _ in range(stages):
            self._send.send_nowait(None)

    async def run(self, client: BrokerClient, job_id: str, fail_at: str | None = None) -> None:
        await run_job(
            client, job_id, query="검색", between_stages=self.between_stages, fail_at=fail_at
        )


async def test_command_runs_a_job_and_a_subscriber_sees_every_stage(broker_process: Any) -> None:
    """``python -m examples.job_progress`` publishes started → … → complete, with Korean and
    English labels; a broker_client subscriber sees each stage in order."""
    job_id = new_id()
    with trio.fail_after(30):
        async with (
            BrokerClient(broker_process.url) as client,
            client.subscribe(job_topic(job_id)) as events,
            trio.open_nursery() as nursery,
        ):
            command = [sys.executable, "-m", "examples.job_progress", "--url", broker_process.url]
            command += ["--job", job_id, "--step", "0"]
            done = trio.Event()
            result: dict[str, Any] = {}

            async def run_command() -> None:
                result["process"] = await trio.run_process(
                    command, cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False
                )
                done.set()

            nursery.start_soon(run_command)
            seen: list[Event] = []
            async for item in events:
                if isinstance(item, Event):
                    seen.append(item)
                    if item.event == "complete":
                        break
            await done.wait()

    process = result["process"]
    assert process.returncode == 0, process.stderr.decode()
    stderr = process.stderr.decode()
    assert f"{broker_process.url}/examples/job_progress/?job={job_id}" in stderr
    assert "벡터 검색 (Vector search)" in stderr
    assert [(e.event, e.data["stage"]) for e in seen] == [
        *(("progress", stage) for stage in PROGRESS_STAGES),
        ("complete", "complete"),
    ]
    assert [e.data["progress"] for e in seen] == [s.progress for s in STAGES[:-1]] + [1]
    assert seen[2].data["label"] == {"ko": "벡터 검색", "en": "Vector search"}
    assert [r["score"] for r in seen[-1].data["results"]] == sorted(
        (r["score"] for r in seen[-1].data["results"]), reverse=True
    )


async def test_late_python_subscriber_gets_the_state_and_the_end(broker_process: Any) -> None:
    """After the job, a broker_client subscriber gets the retained progress and the final
    event, then ``Ended``, and its iteration stops: no reconnect."""
    job_id = new_id()
    with trio.fail_after(30):
        async with BrokerClient(broker_process.url) as client:
            job = GatedJob()
            job.advance(10)
            await job.run(client, job_id)
            async with client.subscribe(job_topic(job_id)) as events:
                items = [item async for item in events]
    assert [type(i).__name__ for i in items] == ["Event", "Event", "Ended"]
    progress, complete, ended = items
    assert isinstance(progress, Event)
    assert isinstance(complete, Event)
    assert (progress.event, progress.data["stage"]) == ("progress", "generating")
    assert (complete.event, len(complete.data["results"])) == ("complete", 3)
    assert isinstance(ended, Ended)
    assert ended.topic == job_topic(job_id)


async def test_late_get_only_client_gets_current_state_then_the_end(broker_process: Any) -> None:
    """After the job: a plain GET gets the retained progress and the final event, then
    ``broker.end``, and the stream ends; reconnecting from the final id gets 204. Publishing to
    the finished job is refused (409)."""
    job_id = new_id()
    url = f"{broker_process.url}/topics/{quote(job_topic(job_id))}/events"
    with trio.fail_after(30):
        async with (
            BrokerClient(broker_process.url) as client,
            client.subscribe(job_topic(job_id)) as live,
        ):
            job = GatedJob()
            job.advance(3)  # started, exact_match, vector_search, graph
            async with trio.open_nursery() as nursery:
                nursery.start_soon(job.run, client, job_id)
                async for item in live:
                    if isinstance(item, Event) and item.data["stage"] == "graph":
                        break
                # Mid-job, a late joiner's first event is the current stage.
                status, events = await _read_first_events(url, 2)
                assert status == 200
                assert [e.event for e in events] == ["broker.start", "progress"]
                assert json.loads(events[1].data)["stage"] == "graph"
                job.advance(3)  # rerank, generating, complete
            status, events = await read_stream(url)
            with pytest.raises(ClientError) as refused:
                await client.publish(job_topic(job_id), {"late": True}, event="progress")
    assert refused.value.status == 409
    assert status == 200
    assert [e.event for e in events] == ["broker.start", "progress", "complete", "broker.end"]
    assert '"generating"' in events[1].data
    final_id = events[2].id
    status, nothing = await read_stream(url, headers={"Last-Event-ID": final_id})
    assert (status, nothing) == (204, [])


async def _read_first_events(url: str, count: int) -> tuple[int, list[Any]]:
    """The first ``count`` events of a live stream (then hang up)."""
    parser, events = SSEParser(), []
    async with httpx.AsyncClient(timeout=10) as http, http.stream("GET", url) as response:
        async for chunk in response.aiter_bytes():
            events.extend(parser.feed(chunk))
            if len(events) >= count:
                return response.status_code, events[:count]
    return response.status_code, events


@pytest.mark.browser
async def test_page_shows_the_current_stage_at_once_and_ends_without_reconnecting(
    broker_process: Any, open_page: Any
) -> None:
    """A page open from the start follows every stage; a page opened mid-job shows the
    current stage at once (the retained progress is its first event); a page opened after
    the end shows the results. Every page ends with ``closed``/``ended`` after one attempt."""
    job_id = new_id()
    with trio.fail_after(90):
        async with BrokerClient(broker_process.url) as client:
            url = page_url(broker_process.url, "job_progress", job=job_id)
            early = await open_page(url)
            await early.wait_for("window.example.subscription.status === 'open'")
            job = GatedJob()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(job.run, client, job_id)
                job.advance(2)  # exact_match, vector_search
                await early.wait_for(_shows("vector_search", 40))

                late = await open_page(url)
                await late.wait_for(_shows("vector_search", 40))
                first = await late.evaluate("window.example.events[0]")
                assert (first["event"], first["data"]["stage"]) == ("progress", "vector_search")
                assert await _checklist(late) == {
                    "started": "done",
                    "exact_match": "done",
                    "vector_search": "current",
                    "graph": "pending",
                    "rerank": "pending",
                    "generating": "pending",
                    "complete": "pending",
                }
                assert "벡터 검색" in await late.evaluate(
                    "document.getElementById('job-stage').textContent"
                )
                job.advance(4)  # graph, rerank, generating, complete

            for page in (early, late):
                await page.wait_for(_ended("complete"))
            early_stages = await early.evaluate("window.example.events.map(e => e.data.stage)")
            assert early_stages == [*PROGRESS_STAGES, "complete"]
            late_stages = await late.evaluate("window.example.events.map(e => e.data.stage)")
            assert late_stages == ["vector_search", "graph", "rerank", "generating", "complete"]

            after = await open_page(url)
            await after.wait_for(_ended("complete"))
            assert await after.evaluate("window.example.events.map(e => e.event)") == [
                "progress",
                "complete",
            ]
            assert set((await _checklist(after)).values()) == {"done"}
            assert await after.evaluate("document.querySelectorAll('#result-list li').length") == 3
            for page in (early, late, after):
                await _assert_ended_without_retry_loop(page)


@pytest.mark.browser
async def test_page_shows_a_failed_job(broker_process: Any, open_page: Any) -> None:
    """``job.failed`` (final) marks the failing stage, shows the message, ends the stream."""
    job_id = new_id()
    with trio.fail_after(60):
        async with BrokerClient(broker_process.url) as client:
            job = GatedJob()
            job.advance(10)
            await job.run(client, job_id, fail_at="rerank")
            page = await open_page(page_url(broker_process.url, "job_progress", job=job_id))
            await page.wait_for(_ended("failed"))
    checklist = await _checklist(page)
    assert [checklist[s] for s in ("graph", "rerank", "generating")] == [
        "done",
        "failed",
        "pending",
    ]
    error = await page.evaluate("document.getElementById('job-error').textContent")
    assert "재순위화 단계가 시간 안에 끝나지 않았습니다" in error
    assert await page.evaluate("window.example.error.code") == "rerank_timeout"
    assert await page.errors() == []


async def _assert_ended_without_retry_loop(page: Any) -> None:
    """Closed for good, and every connection attempt was a stream that opened: none was a
    retry the broker refused (the 204 a finished topic answers), so there was no loop.

    Normally there is one connection, which the broker ends after ``broker.end``. A stream
    that hypercorn serves (a kept-alive page connection) can break before its last frames
    arrive (see KNOWN_NOISE in conftest.py); then the client learns the end from the 204 a
    resume would get (no new attempt), or resumes and gets the rest (a new stream that opens).
    """
    statuses = [s["status"] for s in await page.example("statuses")]
    assert statuses[-1] == "closed", statuses
    assert "failed" not in statuses
    stats = await page.evaluate("window.example.subscription.stats")
    assert stats["attempts"] == statuses.count("open") == stats["reconnects"] + 1, (
        stats,
        statuses,
    )
    assert await page.errors() == []


def _shows(stage: str, percent: int) -> str:
    return f"""(() => {{
        const bar = document.getElementById('job-progress');
        return window.example.stage === {js(stage)}
            && bar.getAttribute('aria-valuenow') === {js(str(percent))};
    }})()"""


def _ended(outcome: str) -> str:
    return (
        f"window.example.outcome === {js(outcome)}"
        " && window.example.subscription.status === 'closed'"
        " && window.example.statuses.at(-1).reason === 'ended'"
    )


async def _checklist(page: Any) -> dict[str, str]:
    return dict(
        await page.evaluate(
            "[...document.querySelectorAll('#job-stages li')]"
            ".map(li => [li.dataset.stage, li.dataset.state])"
        )
    )
