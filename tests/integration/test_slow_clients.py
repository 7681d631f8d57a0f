"""Slow and frozen subscribers: drop-oldest with a notice, eviction, nobody else waits."""

import os
import signal
import socket
import subprocess
import sys

import httpx
import trio

from tests.support.servers import open_broker_server
from tests.support.sse_client import SseStream, open_sse
from tests.support.waiting import wait_for


async def open_unread_socket(url: str, path: str) -> trio.SocketStream:
    """An SSE request from a client that will not read (tiny receive buffer)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return stream


async def test_slow_subscriber_loses_the_oldest_and_is_told_exactly_what():
    with trio.fail_after(30):
        async with open_broker_server(stream={"queue_events": 8}) as server:
            slow = await open_unread_socket(server.url, "/topics/big/events")
            await wait_for(lambda: server.hub.statistics().subscribers == 1)
            pad = "x" * 32_000
            async with httpx.AsyncClient(base_url=server.url) as client:
                for n in range(300):
                    answer = await client.post("/topics/big", json={"n": n, "pad": pad})
                    assert answer.status_code == 202
            stats = server.hub.statistics()
            assert stats.dropped > 0
            assert stats.largest_queue_depth == 8

            reader = SseStream(slow, 200, {})
            await reader._fill()
            reader.buffer = reader.buffer.split(b"\r\n\r\n", 1)[1]
            assert (await reader.next_event()).event == "broker.start"
            before, notice, after = [], None, []
            while len(before) + len(after) + (notice.json()["dropped"] if notice else 0) < 300:
                event = await reader.next_event()
                if event.event == "broker.dropped":
                    assert notice is None
                    notice = event
                elif notice is None:
                    before.append(event)
                else:
                    after.append(event)
            assert notice is not None
            lost = notice.json()["dropped"]
            assert notice.json()["resume_from"] == before[-1].id == notice.id
            numbers = [e.json()["n"] for e in before + after]
            assert numbers == sorted(numbers)
            assert len(after) == 8  # the queue kept the newest
            assert numbers[: len(before)] == list(range(len(before)))
            assert numbers[len(before) :] == list(range(300 - 8, 300))
            assert len(before) + lost + len(after) == 300
            await slow.aclose()

            # The notice's id recovers the dropped events from history.
            again = await open_sse(
                server.url, "/topics/big/events", {"Last-Event-ID": notice.json()["resume_from"]}
            )
            assert (await again.next_event()).event == "broker.start"
            replay = await again.events(lost)
            assert [e.json()["n"] for e in replay] == list(range(len(before), len(before) + lost))
            await again.aclose()


async def test_frozen_client_is_evicted_and_others_keep_receiving():
    with trio.fail_after(30):
        async with open_broker_server(
            stream={"queue_events": 16, "send_timeout_seconds": 0.5}
        ) as server:
            frozen = await open_unread_socket(server.url, "/topics/f/events")
            healthy = await open_sse(server.url, "/topics/f/events")
            await healthy.next_event()
            await wait_for(lambda: server.hub.statistics().subscribers == 2)
            pad = "y" * 16_000
            received = []

            async def read_all():
                while len(received) < 400:
                    received.extend(await healthy.events(1))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                async with httpx.AsyncClient(base_url=server.url) as client:
                    for n in range(400):
                        await client.post("/topics/f", json={"n": n, "pad": pad})
            assert [e.json()["n"] for e in received] == list(range(400))
            await wait_for(lambda: server.hub.statistics().evicted == 1)
            assert server.hub.statistics().subscribers == 1
            await frozen.aclose()
            await healthy.aclose()
            await wait_for(lambda: server.dataplane.statistics().connections == 0)


READER = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.sendall(b"GET /topics/stop/events HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
print("connected", flush=True)
while s.recv(65536):
    pass
"""


async def test_sigstopped_reader_is_evicted():
    with trio.fail_after(30):
        async with open_broker_server(stream={"send_timeout_seconds": 0.5}) as server:
            proc = subprocess.Popen(
                [sys.executable, "-c", READER, str(server.port)], stdout=subprocess.PIPE
            )
            try:
                await trio.to_thread.run_sync(proc.stdout.readline)
                await wait_for(lambda: server.hub.statistics().subscribers == 1)
                os.kill(proc.pid, signal.SIGSTOP)
                pad = "z" * 64_000
                async with httpx.AsyncClient(base_url=server.url) as client:
                    n = 0
                    while server.hub.statistics().evicted == 0:
                        await client.post("/topics/stop", json={"n": n, "pad": pad})
                        n += 1
                        if n % 50 == 0:
                            await trio.sleep(0.1)
                assert server.hub.statistics().subscribers == 0
            finally:
                proc.kill()
                proc.wait()
