"""``python -m examples.job_progress [--url URL] [--job ID] [--step S] [--fail-at STAGE]``

Starts a fake search job that reports its stages to ``jobs/<job id>`` and prints the page to
watch it on. Open the page before, during or after the job: it shows the current stage at once.
"""

from __future__ import annotations

import trio
from broker_client import BrokerClient

from .._shared import command_line, new_id, page_url, run, say
from .pipeline import STAGE_NAMES, STAGES, job_topic, run_job


def main(argv: list[str] | None = None) -> None:
    parser = command_line("job_progress", "Run a fake search job that reports its stages.")
    parser.add_argument("--job", default=None, help="the job id (default: a random one)")
    parser.add_argument(
        "--step", type=float, default=1.5, help="seconds between stages (default %(default)s)"
    )
    parser.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait before starting (open the page)"
    )
    parser.add_argument("--fail-at", choices=STAGE_NAMES[1:-1], help="fail at this stage")
    parser.add_argument("--query", default="trio 구조적 동시성이란?", help="the search query")
    args = parser.parse_args(argv)
    job_id = args.job or new_id()
    labels = {s.name: s for s in STAGES}

    async def between_stages(stage: str) -> None:
        await trio.sleep(args.step)
        say(f"  {stage:<14} {labels[stage].ko} ({labels[stage].en})")

    async def job() -> None:
        async with BrokerClient(args.url, token=args.token) as client:
            say(f"job {job_id}: watch it at {page_url(args.url, 'job_progress', job=job_id)}")
            say(f"  or: curl -N '{args.url.rstrip('/')}/topics/{job_topic(job_id)}/events'")
            await trio.sleep(args.wait)
            say(f"  {'started':<14} {labels['started'].ko} ({labels['started'].en})")
            outcome = await run_job(
                client,
                job_id,
                query=args.query,
                between_stages=between_stages,
                fail_at=args.fail_at,
            )
            if "error" in outcome:
                say(f"job {job_id} failed: {outcome['error']['message']['en']}")
                raise SystemExit(1)
            say(f"job {job_id} complete: {len(outcome['results'])} results")

    run(job)


if __name__ == "__main__":
    main()
