"""A fake search job that reports its stages to the broker, like a real pipeline would.

Events on ``jobs/<job id>`` (stage names and labels from ``stages.json``, shared with the page):

- ``progress`` with ``retain=1``, once per stage, ``started`` (0 %) to ``generating`` (90 %):
  ``{"job", "stage", "progress", "label": {"ko", "en"}, "query", "at"}``. Retained, so a page
  that opens in the middle of the job gets the current stage at once.
- ``complete`` with ``final=1``: ``{"job", "stage": "complete", "progress": 1, "label",
  "results": [{"title", "source", "score"}], "elapsed_ms"}``. Final: the topic closes, every
  subscriber gets ``broker.end`` and its stream ends; a later page still gets the last
  progress and this event, then ``broker.end``.
- ``job.failed`` with ``final=1`` instead, when the job fails at a stage: ``{"job", "stage",
  "progress", "label", "error": {"code", "message": {"ko", "en"}}}``. Failures are a namespaced
  event type: ``error`` is reserved (a browser's EventSource fires its own handler for it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio
from broker_client import BrokerClient

from .._shared import utc_now

HERE: Final = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of the pipeline, as ``stages.json`` lists it."""

    name: str
    progress: float
    ko: str
    en: str

    @property
    def label(self) -> dict[str, str]:
        return {"ko": self.ko, "en": self.en}


def _load_stages() -> tuple[Stage, ...]:
    rows = json.loads((HERE / "stages.json").read_text(encoding="utf-8"))
    return tuple(Stage(r["stage"], float(r["progress"]), r["ko"], r["en"]) for r in rows)


#: Every stage in order; the last one is ``complete``.
STAGES: Final = _load_stages()
STAGE_NAMES: Final = tuple(s.name for s in STAGES)
PROGRESS_EVENT: Final = "progress"
COMPLETE_EVENT: Final = "complete"
FAILED_EVENT: Final = "job.failed"

_RESULTS: Final = (
    {"title": "Trio: 구조적 동시성 입문", "source": "docs/trio/tutorial.md", "score": 0.93},
    {"title": "Server-Sent Events와 재연결", "source": "docs/protocol.md", "score": 0.88},
    {"title": "Retained state for late joiners", "source": "README.md", "score": 0.81},
)


def job_topic(job_id: str) -> str:
    """The topic a job reports on."""
    return f"jobs/{job_id}"


async def run_job(
    client: BrokerClient,
    job_id: str,
    *,
    query: str,
    between_stages: Callable[[str], Awaitable[object]],
    fail_at: str | None = None,
) -> dict[str, Any]:
    """Run the fake job: publish every stage, then ``complete`` (or ``job.failed``).

    Args:
        client: where to publish.
        job_id: the job's id; events go to ``jobs/<job_id>``.
        query: the search query the job pretends to answer.
        between_stages: awaited before every stage after ``started``, with that stage's name
            (the command sleeps; a test waits for its own signal).
        fail_at: fail with ``job.failed`` instead of running this stage.

    Returns:
        The data of the last event published (``complete`` or ``job.failed``).

    Raises:
        ValueError: ``fail_at`` names no stage (``started`` cannot fail).
        broker_client.ClientError: ``409 topic_closed``: this job id already finished.
    """
    if fail_at is not None and fail_at not in STAGE_NAMES[1:]:
        raise ValueError(f"fail_at must be one of {', '.join(STAGE_NAMES[1:])}")
    topic = job_topic(job_id)
    started = trio.current_time()
    last = STAGES[0]
    for stage in STAGES:
        if stage is not STAGES[0]:
            await between_stages(stage.name)
        if stage.name == fail_at:
            failure = {
                "job": job_id,
                "stage": stage.name,
                "progress": last.progress,
                "label": stage.label,
                "error": {
                    "code": f"{stage.name}_timeout",
                    "message": {
                        "ko": f"{stage.ko} 단계가 시간 안에 끝나지 않았습니다",
                        "en": f"{stage.en} did not finish in time",
                    },
                },
                "at": utc_now(),
            }
            await client.publish(topic, failure, event=FAILED_EVENT, final=True)
            return failure
        if stage.name == COMPLETE_EVENT:
            result = {
                "job": job_id,
                "stage": stage.name,
                "progress": 1,
                "label": stage.label,
                "query": query,
                "results": list(_RESULTS),
                "elapsed_ms": round((trio.current_time() - started) * 1000),
                "at": utc_now(),
            }
            await client.publish(topic, result, event=COMPLETE_EVENT, final=True)
            return result
        update = {
            "job": job_id,
            "stage": stage.name,
            "progress": stage.progress,
            "label": stage.label,
            "query": query,
            "at": utc_now(),
        }
        await client.publish(topic, update, event=PROGRESS_EVENT, retain=True)
        last = stage
    raise AssertionError("stages.json must end with 'complete'")
