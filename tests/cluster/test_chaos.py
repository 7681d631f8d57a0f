"""Chaos (issue 20): 3 mesh processes, publishers on every node, subscribers that resume on
random nodes, random kill -9 + restart and SIGSTOP/SIGCONT; then a checker.

The checker: every event acknowledged with ``ack=replicated`` reaches every subscriber
exactly once, each publisher's events to one origin in publish order (per-origin FIFO), ids
within bounds, and every event a subscriber never got is either unacknowledged or covered
by a notice it was sent (``broker.gap`` / ``broker.reset``).

Faults come one at a time (the cluster converges between them): ``min_replicas = 1``
tolerates one failure at a time, not two nodes dying before they exchanged what they hold.

Seeded: the seed is printed; ``CHAOS_SEED=<n>`` replays the same schedule of decisions (the
processes' own timing is not replayable). ``CHAOS_SECONDS`` sets the length of the chaos.
"""

from __future__ import annotations

import os
import random
from collections import Counter

import httpx
import pytest
import trio

from tests.support.chaos import Published, Received, check_subscribers, wait_all_delivered
from tests.support.mesh import Mesh
from tests.support.sse_client import open_sse

SEED = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 32))
SECONDS = float(os.environ.get("CHAOS_SECONDS", "45"))
TOPICS = ("t0", "t1", "t2")


class Chaos:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.mesh = Mesh(
            3,
            history_size=100_000,
            ack="replicated",
            min_replicas="1",
            ack_timeout_seconds="2",
            catchup_seconds="10",
            retire_after_seconds="8",
            remove_after_seconds="60",
        )
        self.incarnation = [f"{name}0" for name in self.mesh.names]
        self.published = Published()
        self.received = [Received() for _ in range(4)]
        self.faults: Counter = Counter()
        self.unconverged = 0

    async def publisher(self, p: int, stop: trio.Event) -> None:
        rng = random.Random(self.seed * 31 + p)
        n = 0
        async with httpx.AsyncClient(timeout=3) as client:
            while not stop.is_set():
                live = self.mesh.live()
                if not live:
                    await trio.sleep(0.05)
                    continue
                i = p if p in live else rng.choice(live)
                n += 1
                incarnation = self.incarnation[i]
                body = {"p": p, "n": n, "o": incarnation}
                try:
                    answer = await client.post(
                        f"{self.mesh.nodes[i].url}/topics/{rng.choice(TOPICS)}",
                        json=body,
                        params={"ack": "replicated"},
                    )
                except httpx.HTTPError:
                    self.published.failed += 1
                else:
                    if answer.status_code == 202:
                        self.published.acked[(p, n)] = incarnation
                    else:  # 503 not_replicated: too few peers linked, or no confirmation
                        self.published.refused += 1
                        await trio.sleep(0.2)
                await trio.sleep(rng.uniform(0.01, 0.04))

    async def subscriber(self, k: int, done: trio.Event) -> None:
        rng = random.Random(self.seed * 17 + k)
        record = self.received[k]
        path = "/events?" + "&".join(f"topic={t}" for t in TOPICS)
        while not done.is_set():
            live = self.mesh.live()
            if not live:
                await trio.sleep(0.05)
                continue
            url = self.mesh.nodes[rng.choice(live)].url
            headers = {"Last-Event-ID": record.last_id} if record.last_id else {}
            try:
                with trio.fail_after(15):  # a node still catching up waits up to 10 s
                    stream = await open_sse(url, path, headers)
            except (OSError, EOFError, trio.TooSlowError):
                await trio.sleep(0.05)
                continue
            try:
                if stream.status != 200:
                    await trio.sleep(0.05)
                    continue
                record.connects += 1
                with trio.move_on_after(rng.uniform(0.5, 5)):
                    while not done.is_set():
                        event = await stream.next_event()
                        if event is None:
                            break
                        if event.id:
                            record.last_id = event.id
                            record.longest_id = max(record.longest_id, len(event.id))
                        if (event.event or "").startswith("broker."):
                            record.notices[event.event] += 1
                            continue
                        data = event.json()
                        record.events.append((data["p"], data["n"], data["o"]))
            except (OSError, EOFError, trio.BrokenResourceError):
                pass
            finally:
                await stream.aclose()

    async def faults_task(self, stop: trio.Event) -> None:
        rng = self.rng
        mesh = self.mesh
        while not stop.is_set():
            await trio.sleep(rng.uniform(1.5, 4))
            if stop.is_set():
                break
            i = rng.randrange(3)
            if rng.random() < 0.6:
                self.faults["kill -9"] += 1
                mesh.kill(i)
                await trio.sleep(rng.uniform(0.2, 1.5))
                await mesh.restart(i)
                self.incarnation[i] = f"{mesh.names[i]}{self.faults['kill -9']}"
            else:
                self.faults["SIGSTOP"] += 1
                mesh.pause(i)
                await trio.sleep(rng.uniform(0.3, 3.0))
                mesh.resume(i)
            try:
                await mesh.wait_linked(timeout=15)
                await mesh.wait_caught_up(timeout=15)
            except trio.TooSlowError:
                self.unconverged += 1

    def check(self) -> dict[str, object]:
        acked = self.published.acked
        report: dict[str, object] = {
            "seed": self.seed,
            "faults": dict(self.faults),
            "acknowledged": len(acked),
            "refused": self.published.refused,
            "failed": self.published.failed,
            "unconverged": self.unconverged,
        }
        problems = check_subscribers(acked, self.received, report)
        report["problems"] = problems
        return report

    async def wait_all_delivered(self, timeout: float) -> None:
        await wait_all_delivered(self.published, self.received, timeout)


@pytest.mark.slow
async def test_chaos_every_acknowledged_event_reaches_every_subscriber_once_in_order():
    print(f"\nchaos seed {SEED} (replay: CHAOS_SEED={SEED}), {SECONDS:.0f} s")
    chaos = Chaos(SEED)
    try:
        with trio.fail_after(SECONDS + 75):
            await chaos.mesh.start()
            async with trio.open_nursery() as nursery:
                stop_faults, stop_publishing, done = trio.Event(), trio.Event(), trio.Event()
                for k in range(len(chaos.received)):
                    nursery.start_soon(chaos.subscriber, k, done)
                with trio.fail_after(10):  # every subscriber is there before the first event
                    while not all(r.last_id for r in chaos.received):
                        await trio.sleep(0.05)
                for p in range(3):
                    nursery.start_soon(chaos.publisher, p, stop_publishing)
                async with trio.open_nursery() as faults:
                    faults.start_soon(chaos.faults_task, stop_faults)
                    await trio.sleep(SECONDS)
                    stop_faults.set()
                await chaos.mesh.wait_linked(timeout=20)
                stop_publishing.set()
                await chaos.mesh.wait_converged(timeout=20)
                await chaos.wait_all_delivered(timeout=20)
                done.set()
                nursery.cancel_scope.cancel()
    finally:
        chaos.mesh.close()
    report = chaos.check()
    for key, value in report.items():
        print(f"  {key}: {value}")
    assert report["acknowledged"] > 100, report
    assert not report["problems"], f"seed {SEED}: {report['problems']}"
