"""Chaos on the Redis engine (issue 20): 3 broker nodes on one Redis (AOF, ``appendfsync
always``), a publisher on every node, subscribers that resume with their last id on a
random node, and random faults: Redis ``kill -9`` then restart on the same port and data
directory, Redis SIGSTOP/SIGCONT, a broker node shut down and replaced.

The checker (``tests/support/chaos.py``, shared with the mesh chaos test) demands that
every acknowledged (``202``) event reaches every subscriber exactly once, each publisher's
events to one topic in publish order, ids within bounds; here also that every subscriber
saw each topic's events in one same order (the engine orders per topic), that no
``broker.gap``/``broker.reset`` was needed (Redis keeps every acknowledged entry, history is
large enough, so a resume is always exact), and that a publish was answered ``202`` or
``503 store_unavailable`` (during an outage), nothing else. A ``503`` event may still be
delivered (Redis ran the script but its answer came too late); it is never counted lost.

Seeded: the seed is printed; ``CHAOS_SEED=<n>`` replays the same schedule of decisions
(the processes' own timing is not replayable). ``CHAOS_SECONDS`` sets the length of the
chaos (22 s by default; the whole test is bounded at ``CHAOS_SECONDS + 38`` s).
"""

from __future__ import annotations

import os
import random
from collections import Counter

import httpx
import pytest
import trio

from broker.server import RunningServer
from tests.redis.conftest import RedisServer, needs_redis
from tests.redis.scenarios import start_redis_node
from tests.support.chaos import Published, Received, check_subscribers, wait_all_delivered
from tests.support.sse_client import open_sse

pytestmark = [needs_redis, pytest.mark.slow]

SEED = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 32))
SECONDS = float(os.environ.get("CHAOS_SECONDS", "22"))
TOPICS = ("t0", "t1", "t2")
NODES = 3
NODE_TABLES = {
    "history": {"size": 100_000},  # never trimmed during the run: no gap is allowed
    "stream": {"heartbeat_seconds": 0.5},
}


class RedisChaos:
    def __init__(self, seed: int, redis: RedisServer, prefix: str) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.redis = redis
        self.prefix = prefix
        self.nodes: list[RunningServer | None] = [None] * NODES
        self.published = Published()
        self.statuses: Counter = Counter()
        self.unexpected: list[str] = []
        self.received = [Received() for _ in range(4)]
        self.faults: Counter = Counter()
        self.unrecovered = 0
        self.redis_paused = False

    def live(self) -> list[int]:
        return [i for i, node in enumerate(self.nodes) if node is not None]

    async def start_node(self, nursery: trio.Nursery, i: int) -> None:
        self.nodes[i] = await start_redis_node(nursery, self.redis.url, self.prefix, **NODE_TABLES)

    async def publisher(self, p: int, stop: trio.Event) -> None:
        rng = random.Random(self.seed * 31 + p)
        n = 0
        async with httpx.AsyncClient(timeout=5) as client:
            while not stop.is_set():
                live = self.live()
                if not live:
                    await trio.sleep(0.05)
                    continue
                node = self.nodes[p if p in live else rng.choice(live)]
                assert node is not None
                n += 1
                topic = rng.choice(TOPICS)
                try:
                    answer = await client.post(
                        f"{node.url}/topics/{topic}", json={"p": p, "n": n, "t": topic}
                    )
                except httpx.HTTPError:  # its node was shut down under it: outcome unknown
                    self.published.failed += 1
                    continue
                self.statuses[answer.status_code] += 1
                if answer.status_code == 202:
                    self.published.acked[(p, n)] = topic
                elif answer.status_code == 503 and (
                    answer.json().get("code") == "store_unavailable"
                    and int(answer.headers["retry-after"]) >= 1
                ):
                    self.published.refused += 1
                    await trio.sleep(0.1)
                else:
                    self.unexpected.append(f"{answer.status_code} {answer.text[:200]}")
                await trio.sleep(rng.uniform(0.01, 0.03))

    async def subscriber(self, k: int, done: trio.Event) -> None:
        rng = random.Random(self.seed * 17 + k)
        record = self.received[k]
        path = "/events?" + "&".join(f"topic={t}" for t in TOPICS)
        while not done.is_set():
            live = self.live()
            if not live:
                await trio.sleep(0.05)
                continue
            node = self.nodes[rng.choice(live)]
            assert node is not None
            headers = {"Last-Event-ID": record.last_id} if record.last_id else {}
            try:
                with trio.fail_after(5):
                    stream = await open_sse(node.url, path, headers)
            except (OSError, EOFError, trio.TooSlowError):
                await trio.sleep(0.05)
                continue
            try:
                if stream.status != 200:  # 503 while Redis is away
                    record.notices[f"status {stream.status}"] += 1
                    await trio.sleep(0.1)
                    continue
                record.connects += 1
                retry = None
                with trio.move_on_after(rng.uniform(0.5, 4)):
                    while not done.is_set():
                        event = await stream.next_event()
                        if event is None:
                            break
                        if event.event == "broker.recovered":  # in-band, at our position
                            position = event.json().get("position")
                            if position != record.last_id:
                                self.unexpected.append(
                                    f"broker.recovered at {position}, stream at {record.last_id}"
                                )
                        if event.id:
                            record.last_id = event.id
                            record.longest_id = max(record.longest_id, len(event.id))
                        if event.retry is not None:
                            retry = event.retry
                        if (event.event or "").startswith("broker."):
                            record.notices[event.event] += 1
                            if event.event == "broker.degraded" and "retry_ms" in event.json():
                                record.notices["refused streams"] += 1
                            continue
                        data = event.json()
                        record.events.append((data["p"], data["n"], data["t"]))
            except (OSError, EOFError, trio.BrokenResourceError):
                pass
            finally:
                await stream.aclose()
            if retry is not None:  # a stream refused while Redis is away: as EventSource does
                await trio.sleep(retry / 1000)

    async def faults_task(self, nursery: trio.Nursery, stop: trio.Event) -> None:
        rng = self.rng
        while not stop.is_set():
            await trio.sleep(rng.uniform(1, 2.5))
            if stop.is_set():
                break
            roll = rng.random()
            if roll < 0.45:
                self.faults["redis kill -9"] += 1
                await trio.to_thread.run_sync(self.redis.kill)
                await trio.sleep(rng.uniform(0.2, 2))
                await trio.to_thread.run_sync(self.redis.start)
            elif roll < 0.8:
                self.faults["redis SIGSTOP"] += 1
                self.redis.pause()
                self.redis_paused = True
                await trio.sleep(rng.uniform(0.2, 2.5))
                self.redis.resume()
                self.redis_paused = False
            else:
                self.faults["node replaced"] += 1
                i = rng.randrange(NODES)
                node = self.nodes[i]
                assert node is not None
                self.nodes[i] = None  # no new client picks it
                node.request_shutdown()
                await trio.sleep(rng.uniform(0.1, 1))
                await self.start_node(nursery, i)
            if not await self.all_up(timeout=10):
                self.unrecovered += 1

    async def all_up(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not all(
                node is not None and node.store is not None and node.store.healthy
                for node in self.nodes
            ):
                await trio.sleep(0.05)
            return True
        return False

    def check(self) -> dict[str, object]:
        acked = self.published.acked
        report: dict[str, object] = {
            "seed": self.seed,
            "faults": dict(self.faults),
            "acknowledged": len(acked),
            "refused (503)": self.published.refused,
            "failed (node gone)": self.published.failed,
            "statuses": dict(self.statuses),
            "unrecovered": self.unrecovered,
        }
        problems = check_subscribers(acked, self.received, report)
        notices: Counter = Counter()
        for k, record in enumerate(self.received):
            notices.update(record.notices)
            gaps = record.notices["broker.gap"] + record.notices["broker.reset"]
            if gaps:
                problems.append(f"subscriber {k}: {gaps} gap/reset notices, none allowed")
        report["notices"] = dict(notices)
        problems.extend(self.one_order_per_topic())
        if self.unexpected:
            problems.append(f"unexpected: {self.unexpected[:5]}")
        report["problems"] = problems
        return report

    def one_order_per_topic(self) -> list[str]:
        """Every subscriber saw each topic's events in the same order (the stream's)."""
        problems = []
        first = self.received[0].events
        for k, record in enumerate(self.received[1:], 1):
            for topic in TOPICS:
                mine = [(p, n) for p, n, t in record.events if t == topic]
                theirs = [(p, n) for p, n, t in first if t == topic]
                common = set(mine) & set(theirs)
                if [e for e in mine if e in common] != [e for e in theirs if e in common]:
                    problems.append(f"subscribers 0 and {k} saw {topic} in different orders")
        return problems

    async def wait_all_delivered(self, timeout: float) -> None:
        await wait_all_delivered(self.published, self.received, timeout)


async def test_redis_chaos_every_acknowledged_event_reaches_every_subscriber_once_in_order(
    tmp_path, key_prefix
):
    print(f"\nredis chaos seed {SEED} (replay: CHAOS_SEED={SEED}), {SECONDS:.0f} s")
    redis = RedisServer(tmp_path, persistent=True)  # appendonly yes, appendfsync always
    redis.start()
    chaos = RedisChaos(SEED, redis, key_prefix)
    try:
        with trio.fail_after(SECONDS + 38):
            async with trio.open_nursery() as nursery:
                for i in range(NODES):
                    await chaos.start_node(nursery, i)
                async with trio.open_nursery() as clients:
                    stop_faults, stop_publishing, done = trio.Event(), trio.Event(), trio.Event()
                    for k in range(len(chaos.received)):
                        clients.start_soon(chaos.subscriber, k, done)
                    with trio.fail_after(10):  # every subscriber is there before the first event
                        while not all(r.last_id for r in chaos.received):
                            await trio.sleep(0.05)
                    for p in range(NODES):
                        clients.start_soon(chaos.publisher, p, stop_publishing)
                    async with trio.open_nursery() as faults:
                        faults.start_soon(chaos.faults_task, nursery, stop_faults)
                        await trio.sleep(SECONDS)
                        stop_faults.set()
                    assert await chaos.all_up(timeout=10), "Redis or a node did not come back"
                    stop_publishing.set()
                    await chaos.wait_all_delivered(timeout=15)
                    done.set()
                    clients.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
    finally:
        if chaos.redis_paused:
            redis.resume()
        redis.kill()
    report = chaos.check()
    for key, value in report.items():
        print(f"  {key}: {value}")
    assert report["acknowledged"] > 100, report
    assert not report["problems"], f"seed {SEED}: {report['problems']}"
