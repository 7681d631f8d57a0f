"""How a node should learn about new stream entries: three ways, measured.

Not a test (pytest does not collect it): the measurement behind the choice documented in
``broker/engines/redis/follower.py`` and the README. Run it with::

    .venv/bin/python -m tests.redis.measure_live_read [--rate 2000] [--seconds 5]

It starts a throwaway ``redis-server``, a publisher process that runs the broker's own
publish script (``XADD`` + one message per event) at a paced rate spread over T topics,
and in this process one reader of each kind in turn, following all T topics:

* ``message`` (what the engine does): SUBSCRIBE to each topic's channel; an event whose
  predecessor id is the reader's last entry is taken from the message; only a gap makes
  it read the stream;
* ``doorbell``: the message only rings; every rung topic is read from its last entry
  with one pipelined ``XRANGE`` per pass;
* ``xread``: one blocking ``XREAD BLOCK 1000 STREAMS k1..kT id1..idT`` loop on its own
  connection (on Redis Cluster one command cannot name keys of two slots, so this would
  need a connection per topic).

Reported per delivered event: the reader's CPU (this process), Redis' CPU (INFO), and the
publish-to-read latency (p50/p99).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import coredis
import trio
from coredis.retry import NoRetryPolicy

PUBLISHER = r"""
import sys, time, random, trio, coredis
from broker.engines.redis import entries
url, topics, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
async def main():
    async with coredis.Redis.from_url(url, decode_responses=True) as client:
        script = client.register_script(entries.PUBLISH_LUA)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            topic = f"t{random.randrange(topics)}"
            keys, args, _ = entries.publish_arguments(
                "m", 1000, "PUBLISH", int(time.time() * 1000),
                [(topic, repr(time.time()), None, 0)])
            await script(keys, args)
            n += 1
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await trio.sleep(delay)
trio.run(main)
"""


def _redis_cpu(info: dict) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _subscribed_reader(
    client, topics: list[str], seconds: float, lat: list[float], *, take_messages: bool
) -> int:
    last = dict.fromkeys(topics, "0-0")
    dirty: set[str] = set()
    wake = trio.Event()
    count = 0

    def on_message(message):
        nonlocal count
        topic = message["channel"][3:-1]
        previous, entry_id, _flags, _ms, _type, data = message["data"].split("\n", 5)
        if take_messages and topic not in dirty and previous == last[topic]:
            lat.append(time.time() - float(data))
            count += 1
            last[topic] = entry_id
        else:
            dirty.add(topic)
            wake.set()

    async with client.pubsub(retry_policy=None, ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(**{f"m:{{{t}}}": on_message for t in topics})
        with trio.move_on_after(seconds):
            while True:
                await wake.wait()
                wake = trio.Event()
                rung = list(dirty)
                dirty.clear()
                async with client.pipeline(transaction=False) as pipe:
                    requests = [pipe.xrange(f"m:{{{t}}}", last[t], "+", count=1000) for t in rung]
                now = time.time()
                for topic, request in zip(rung, requests, strict=True):
                    found = await request
                    for entry in found:
                        if entry.identifier == last[topic]:
                            continue
                        lat.append(now - float(entry.field_values["d"]))
                        count += 1
                    if found:
                        last[topic] = found[-1].identifier
    return count


async def _xread_reader(client, topics: list[str], seconds: float, lat: list[float]) -> int:
    last = {f"m:{{{t}}}": "$" for t in topics}
    count = 0
    with trio.move_on_after(seconds):
        while True:
            found = await client.xread(last, count=1000, block=1000)
            now = time.time()
            for key, items in (found or {}).items():
                for entry in items:
                    lat.append(now - float(entry.field_values["d"]))
                    count += 1
                last[key] = items[-1].identifier
    return count


async def _measure(url: str, kind: str, topics: int, rate: float, seconds: float) -> dict:
    names = [f"t{n}" for n in range(topics)]
    async with (
        coredis.Redis.from_url(url, decode_responses=True, retry_policy=NoRetryPolicy()) as client,
        coredis.Redis.from_url(url, decode_responses=True) as admin,
    ):
        lat: list[float] = []
        redis_before = _redis_cpu(await admin.info("cpu"))
        cpu_before = _cpu()
        publisher = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, url, str(topics), str(rate), str(seconds)],
            cwd=Path(__file__).resolve().parents[2],
        )
        if kind == "xread":
            count = await _xread_reader(client, names, seconds + 0.5, lat)
        else:
            count = await _subscribed_reader(
                client, names, seconds + 0.5, lat, take_messages=kind == "message"
            )
        cpu = _cpu() - cpu_before
        publisher.wait(30)
        redis_cpu = _redis_cpu(await admin.info("cpu")) - redis_before
        await admin.flushall()
    lat.sort()
    return {
        "reader": kind,
        "topics": topics,
        "events": count,
        "reader_cpu_us_per_event": round(cpu / max(count, 1) * 1e6, 1),
        "redis_cpu_us_per_event": round(redis_cpu / max(count, 1) * 1e6, 1),
        "latency_p50_ms": round(statistics.median(lat) * 1000, 2) if lat else None,
        "latency_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rate", type=float, default=2000, help="events per second")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--topics", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--kinds", nargs="+", default=["message", "doorbell", "xread"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        port = random.randrange(20000, 30000)
        server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{port}/0"
            for topics in args.topics:
                for kind in args.kinds:
                    result = trio.run(_measure, url, kind, topics, args.rate, args.seconds)
                    print(json.dumps(result), flush=True)
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
