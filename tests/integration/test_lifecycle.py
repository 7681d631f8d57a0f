"""Connections, subscriptions and tasks return to zero; shutdown; long-lived streams."""

import signal

import httpx
import pytest
import trio

from tests.integration.test_slow_clients import open_unread_socket
from tests.support.servers import BrokerProcess, open_broker_server
from tests.support.sse_client import open_sse
from tests.support.waiting import wait_for


@pytest.mark.slow
async def test_1000_subscriber_churn_leaves_nothing_behind(task_count):
    with trio.fail_after(120):
        async with open_broker_server(stream={"queue_events": 4}) as server:
            await wait_for(lambda: server.dataplane.statistics().connections == 0, timeout=20)
            baseline = task_count()
            pad = "p" * 20_000
            async with httpx.AsyncClient(base_url=server.url) as client:
                for wave in range(4):
                    reading, stalled = [], []
                    for n in range(250):
                        if n % 5 == 0:  # a fifth stop reading: their queues fill up
                            stalled.append(
                                await open_unread_socket(
                                    server.url, f"/events?topic=w{wave}&topic=big"
                                )
                            )
                        else:
                            reading.append(await open_sse(server.url, f"/topics/w{wave}/events"))
                    await wait_for(lambda: server.hub.statistics().subscribers == 250, timeout=20)
                    for n in range(40):
                        await client.post(f"/topics/w{wave}", json={"n": n})
                        await client.post("/topics/big", json={"n": n, "pad": pad})
                    # half of the readers leave mid-stream, the rest after reading it all
                    for index, stream in enumerate(reading):
                        await stream.events(20 if index % 2 else 40)
                    assert server.hub.statistics().largest_queue_depth == 4
                    for stream in reading + stalled:
                        await stream.aclose()
                    await wait_for(lambda: server.hub.statistics().subscribers == 0, timeout=20)
            stats = server.hub.statistics()
            assert stats.subscriptions == 0
            assert stats.dropped > 0
            await wait_for(lambda: server.dataplane.statistics().connections == 0, timeout=20)
            assert server.streams.statistics().open == 0
            await wait_for(lambda: task_count() == baseline, timeout=20)


async def test_shutdown_sends_a_final_notice_and_ends_every_stream(task_count):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            from broker.server import serve
            from tests.support.servers import TEST_SETTINGS

            before = task_count()
            server = await nursery.start(serve, TEST_SETTINGS)
            streams = [await open_sse(server.url, f"/topics/s{n}/events") for n in range(5)]
            envelope = await open_sse(server.url, "/events?topic=s0&envelope=1")
            for stream in [*streams, envelope]:
                await stream.next_event()
            server.request_shutdown()
            for stream in streams:
                final = await stream.next_event()
                assert final.event == "broker.shutdown"
                assert 1500 <= final.json()["retry_ms"] <= 4500
                assert final.retry == final.json()["retry_ms"]
                assert await stream.next_event() is None  # the server closed the stream
            final = await envelope.next_event()
            assert final.json()["event"] == "broker.shutdown"
        assert task_count() == before


async def test_process_exits_zero_within_two_seconds_of_sigterm():
    with BrokerProcess() as broker:
        stream = await open_sse(broker.url, "/topics/p/events")
        await stream.next_event()
        started = trio.current_time()
        code = await broker.astop(signal.SIGTERM)
        assert code == 0
        assert trio.current_time() - started < 2
        final = await stream.next_event()
        assert final.event == "broker.shutdown"


async def test_streams_stay_open_and_deliver_past_90_seconds(mock_clock):
    """quart-trio ends responses after 60 s unless told otherwise (pallets/quart#218).

    The mock clock runs 40x faster than real time, so every timer in the broker, hypercorn
    and Quart sees 100 s pass while real sockets keep working.
    """
    mock_clock.rate = 40
    with trio.fail_after(200):
        async with open_broker_server(stream={"heartbeat_seconds": 15}) as server:
            direct = await open_sse(server.url, "/topics/long/events")
            await direct.next_event()
            # The same request after a page request on one kept-alive connection is served
            # by hypercorn (the ASGI path): it must last as long.
            host, port = server.url.removeprefix("http://").rsplit(":", 1)
            conn = await trio.open_tcp_stream(host, int(port))
            await conn.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b'"ok"}' not in head:
                head += await conn.receive_some(4096)
            await conn.send_all(b"GET /topics/long/events HTTP/1.1\r\nHost: x\r\n\r\n")
            from tests.support.sse_client import SseStream

            via_asgi = SseStream(conn, 200, {})
            while b"\r\n\r\n" not in via_asgi.buffer:
                await via_asgi._fill()
            head, via_asgi.buffer = via_asgi.buffer.split(b"\r\n\r\n", 1)
            assert b"text/event-stream" in head
            assert (await via_asgi.next_event()).event == "broker.start"
            await trio.sleep(100)
            async with httpx.AsyncClient(base_url=server.url) as client:
                await client.post("/topics/long", content=b"still here")
            assert (await direct.events(1))[0].data == "still here"
            assert (await via_asgi.events(1))[0].data == "still here"
            assert direct.raw.count(b":\n") >= 6  # heartbeats kept the line busy
            assert server.hub.statistics().subscribers == 2
            await direct.aclose()
            await conn.aclose()


async def _closed_by_server(stream: trio.SocketStream) -> bytes:
    """Read until the server closes the connection; return what it sent."""
    received = b""
    while chunk := await stream.receive_some(65536):
        received += chunk
    return received


async def test_idle_and_slow_connections_are_closed_but_streams_are_not():
    with trio.fail_after(20):
        async with open_broker_server(limits={"idle_timeout_seconds": 0.5}) as server:
            host, port = "127.0.0.1", server.port
            kept_alive = await trio.open_tcp_stream(host, port)
            await kept_alive.send_all(
                b"POST /topics/t HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
            )
            half_head = await trio.open_tcp_stream(host, port)
            await half_head.send_all(b"POST /topics/t HTTP/1.1\r\nHost: h\r\n")
            half_body = await trio.open_tcp_stream(host, port)
            await half_body.send_all(
                b"POST /topics/t HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"
            )
            stream = await open_sse(server.url, "/topics/t/events")
            opened = trio.current_time()
            answered = await _closed_by_server(kept_alive)
            assert answered.startswith(b"HTTP/1.1 202 ")
            # A head or body under way when its time is up is answered 408 (issue 17).
            for half in (half_head, half_body):
                answer = await _closed_by_server(half)
                assert answer.startswith(b"HTTP/1.1 408 ")
                assert answer.endswith(b'"code":"request_timeout"}')
            assert trio.current_time() - opened < 5
            await wait_for(lambda: server.dataplane.statistics().connections == 1, timeout=20)
            # The stream outlived the idle timeout several times over and still delivers.
            await trio.sleep(1.5)
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await client.post("/topics/t", content=b"late")).status_code == 202
            assert [e.data for e in await stream.events(1)] == ["late"]
            await stream.aclose()
