"""Slow and greedy clients (issue 17): head and body deadlines, per-address limits from accept,
a full descriptor table, and answers that survive a client still sending.

Real sockets throughout; the two descriptor-table tests run the broker as a process with a
lowered ``ulimit -n`` (``BrokerProcess(open_files=...)``).
"""

from __future__ import annotations

import json
import os
import select
import socket

import trio

from tests.support.servers import BrokerProcess, open_broker_server

PUBLISH = (
    b"POST /topics/good HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
)


async def read_to_end(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server sends until it closes (a reset fails the test)."""
    received = b""
    while chunk := await stream.receive_some(65536):
        received += chunk
    return received


def json_body(answer: bytes) -> dict[str, object]:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


async def connect(port: int, source: str = "127.0.0.1") -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def test_a_slow_head_is_answered_408_and_closed_but_an_idle_keep_alive_is_not():
    limits = {"head_timeout_seconds": 0.5, "idle_timeout_seconds": 30}
    with trio.fail_after(10):
        async with open_broker_server(limits=limits) as server:
            kept = await connect(server.port)
            await kept.send_all(b"POST /topics/t HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
            assert (await kept.receive_some(65536)).startswith(b"HTTP/1.1 202 ")
            silent = await connect(server.port)
            slow = await connect(server.port)
            opened = trio.current_time()
            await slow.send_all(b"POST /topics/t HTTP/1.1\r\nHost: h\r\n")
            answer = await read_to_end(slow)
            waited = trio.current_time() - opened
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert json_body(answer)["code"] == "request_timeout"
            assert 0.4 < waited < 2.0
            assert await read_to_end(silent) == b""  # nothing sent at all: closed, no answer

            # The kept-alive connection has idled past the head timeout: it may (idle_timeout),
            # but a head it then starts has head_timeout to complete.
            await kept.send_all(b"POST /topics/t HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\ny")
            assert (await kept.receive_some(65536)).startswith(b"HTTP/1.1 202 ")
            started = trio.current_time()
            await kept.send_all(b"POST /topics/t HTTP/1.1\r\n")
            answer = await read_to_end(kept)
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert trio.current_time() - started < 2.0
            assert server.dataplane.statistics().request_timeouts == 2
            for stream in (kept, silent, slow):
                await stream.aclose()
            with trio.fail_after(5):
                while server.dataplane.statistics().connections:
                    await trio.sleep(0.01)
            assert server.dataplane._waiting == {}


async def test_a_body_below_the_minimum_rate_is_answered_408():
    limits = {"head_timeout_seconds": 0.5, "min_body_rate_bytes": 1000}
    with trio.fail_after(10):
        async with open_broker_server(limits=limits) as server:
            fast = await connect(server.port)
            slow = await connect(server.port)
            for stream in (fast, slow):
                await stream.send_all(
                    b"POST /topics/t HTTP/1.1\r\nHost: h\r\nContent-Length: 3000\r\n\r\n"
                )
            started = trio.current_time()
            # 3000 bytes at 3000 bytes/s: within grace + rate. The slow one sends 100 bytes/s.
            for _ in range(10):
                await fast.send_all(b"f" * 300)
                await slow.send_all(b"s" * 10)
                await trio.sleep(0.1)
            assert (await fast.receive_some(65536)).startswith(b"HTTP/1.1 202 ")
            answer = await read_to_end(slow)
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert json_body(answer)["code"] == "request_timeout"
            assert trio.current_time() - started < 3.0
            assert server.hub.statistics().published == 1
            await fast.aclose()
            await slow.aclose()


async def test_connections_over_the_per_address_limit_are_refused_before_their_head():
    with trio.fail_after(10):
        async with open_broker_server(limits={"max_connections_per_ip": 5}) as server:
            slow = []
            for _ in range(5):
                stream = await connect(server.port)
                await stream.send_all(b"GET /topics/t/events HTTP/1.1\r\n")  # never finished
                slow.append(stream)
            limiter = server.dataplane.policy.connections
            with trio.fail_after(5):
                while limiter.by_ip.get("127.0.0.1") != 5:
                    await trio.sleep(0.01)
            for _ in range(20):
                over = await connect(server.port)
                await over.send_all(b"GET /topics/t/events HTTP/1.1\r\n")  # head incomplete
                answer = await read_to_end(over)
                assert answer.startswith(b"HTTP/1.1 503 ")
                assert json_body(answer)["code"] == "overloaded"
                assert b"Retry-After: " in answer
                await over.aclose()
            assert limiter.refused == 20
            # Another address is not held back (127.0.0.2 is loopback too).
            good = await connect(server.port, source="127.0.0.2")
            await good.send_all(PUBLISH)
            assert (await read_to_end(good)).startswith(b"HTTP/1.1 202 ")
            await good.aclose()
            with trio.fail_after(5):
                while limiter.by_ip != {"127.0.0.1": 5}:
                    await trio.sleep(0.01)
            for stream in slow:
                await stream.aclose()
            with trio.fail_after(5):
                while limiter.total or server.dataplane.statistics().connections:
                    await trio.sleep(0.01)
            assert server.dataplane._waiting == {}
            assert limiter.by_ip == {}


def _send_too_much(port: int) -> tuple[bytes, str]:
    """A client that sends a 20 MB body, looking for an answer between writes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(b"POST /topics/t HTTP/1.1\r\nHost: h\r\nContent-Length: 20000000\r\n\r\n")
        piece = b"x" * 65536
        for _ in range(20_000_000 // len(piece)):
            sock.sendall(piece)
            if select.select([sock], [], [], 0)[0]:
                break
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer, "eof"
    except OSError as exc:
        return b"", repr(exc)
    finally:
        sock.close()


async def test_413_is_read_by_a_client_that_keeps_sending():
    """A 413 used to be followed by a reset that destroyed it (issue 17)."""
    with trio.fail_after(20):
        async with open_broker_server(limits={"max_body_bytes": 1000}) as server:
            for _ in range(3):
                answer, end = await trio.to_thread.run_sync(_send_too_much, server.port)
                assert end == "eof"
                assert answer.startswith(b"HTTP/1.1 413 ")
                assert json_body(answer)["code"] == "payload_too_large"
            with trio.fail_after(5):
                while server.dataplane.statistics().connections:
                    await trio.sleep(0.01)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait_for_log(broker: BrokerProcess, text: str, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not any(text in line for line in broker.log):
            await trio.sleep(0.02)


async def _timed_publish(port: int) -> float:
    started = trio.current_time()
    with trio.fail_after(2):  # the bound for a good client under attack
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(PUBLISH)
        answer = await read_to_end(stream)
        await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 202 ")
    return trio.current_time() - started


async def test_slowloris_against_a_full_descriptor_table_does_not_stop_good_clients():
    """300 slow heads, reconnected when closed, against ``ulimit -n 256`` (issue 17).

    The head timeout (5 s) is longer than the test: good clients get in because the broker
    closes the connections that waited longest for a head when accept hits EMFILE.
    """
    broker = BrokerProcess(env={"BROKER_LIMITS_HEAD_TIMEOUT_SECONDS": "5"}, open_files=256)
    await broker.astart()
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as attackers:

                async def slowloris() -> None:
                    while True:
                        try:
                            stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
                        except OSError:
                            await trio.sleep(0.1)
                            continue
                        async with stream, trio.open_nursery() as nursery:

                            async def trickle(stream: trio.SocketStream = stream) -> None:
                                await stream.send_all(b"GET /topics/t/events HTTP/1.1\r\n")
                                while True:
                                    await trio.sleep(0.5)
                                    await stream.send_all(b"X-Slow: 1\r\n")

                            nursery.start_soon(trickle)
                            try:
                                while await stream.receive_some(4096):
                                    pass
                            except trio.BrokenResourceError:
                                pass
                            nursery.cancel_scope.cancel()
                        await trio.sleep(0.05)  # then comes back, as a slowloris does

                for _ in range(300):
                    attackers.start_soon(slowloris)
                await _wait_for_log(broker, "accept failed: EMFILE")
                latencies = []
                for _ in range(5):
                    latencies.append(await _timed_publish(broker.port))
                    await trio.sleep(0.1)
                assert broker.proc is not None
                assert broker.proc.poll() is None
                attackers.cancel_scope.cancel()
        print("good client latencies (s):", " ".join(f"{t:.3f}" for t in latencies))
        assert max(latencies) < 2.0
        assert any("closed to make room" in line for line in broker.log)
        assert sum("accept failed" in line for line in broker.log) == 1
    finally:
        assert await broker.astop() == 0


async def test_a_full_descriptor_table_backs_off_without_spinning_and_logs_once():
    """Descriptors held by streams (nothing to close): accept sleeps, 0.1 s doubling to 1 s."""
    broker = BrokerProcess(open_files=64)
    await broker.astart()
    streams = []
    try:
        with trio.fail_after(20):
            for _ in range(70):  # more than the table holds: the rest wait in the backlog
                stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
                await stream.send_all(b"GET /topics/t/events HTTP/1.1\r\nHost: h\r\n\r\n")
                streams.append(stream)
            await _wait_for_log(broker, "accept failed: EMFILE")
            assert broker.proc is not None
            before = _cpu_seconds(broker.proc.pid)
            await trio.sleep(1.0)  # a measurement window, not a wait for something
            used = _cpu_seconds(broker.proc.pid) - before
            assert used < 0.15, f"{used:.2f} s of CPU in 1 s while the table is full"
            for stream in streams[:30]:
                await stream.aclose()
            metrics = await _metrics(broker.port)
            assert metrics["broker_accept_failures_total"] >= 3
            assert sum("accept failed" in line for line in broker.log) == 1
    finally:
        for stream in streams:
            await stream.aclose()
        assert await broker.astop() == 0


async def _metrics(port: int) -> dict[str, float]:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
            answer.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]
        ):
            answer += await stream.receive_some(65536)  # hypercorn keeps it open
        text = answer.split(b"\r\n\r\n", 1)[1].decode()
        await stream.aclose()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_the_soft_open_files_limit_is_raised_to_the_hard_limit():
    broker = BrokerProcess()
    await broker.astart()
    try:
        assert broker.proc is not None
        with open(f"/proc/{broker.proc.pid}/limits") as file:
            line = next(row for row in file if row.startswith("Max open files"))
        soft, hard = line.split()[3:5]
        assert soft == hard
        assert any(f"open files: limit {soft}" in row for row in broker.log)
    finally:
        await broker.astop()
