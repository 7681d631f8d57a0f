"""The WebSocket fallback: same events, ids and guarantees as SSE, plus commands."""

import json

import httpx
import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.support.servers import open_broker_server
from tests.support.sse_client import open_sse
from tests.support.waiting import wait_for


def ws_url(server, path):
    return server.url.replace("http://", "ws://") + path


async def next_json(ws):
    return json.loads(await ws.get_message())


async def test_same_events_and_ids_as_sse():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            sse = await open_sse(server.url, "/topics/t/events")
            await sse.next_event()
            async with open_websocket_url(ws_url(server, "/topics/t/ws")) as ws:
                start = await next_json(ws)
                assert start["event"] == "broker.start"
                assert start["topic"] is None
                assert start["id"] == start["data"]["position"]
                async with httpx.AsyncClient(base_url=server.url) as client:
                    await client.post("/topics/t?event=progress", json={"p": "안녕"})
                    await client.post("/topics/t", content="line1\r\nline2")
                first, second = await next_json(ws), await next_json(ws)
                sse_first, sse_second = await sse.events(2)
                assert first == {
                    "id": sse_first.id,
                    "topic": "t",
                    "event": "progress",
                    "data": {"p": "안녕"},
                }
                assert second == {
                    "id": sse_second.id,
                    "topic": "t",
                    "event": None,
                    "data": "line1\r\nline2",
                }  # WebSocket keeps CR LF
            await sse.aclose()


@pytest.mark.parametrize(
    ("query", "subprotocols"), [("?format=msgpack", ()), ("", ("broker.msgpack",))]
)
async def test_msgpack_frames(query, subprotocols):
    with trio.fail_after(10):
        async with (
            open_broker_server() as server,
            open_websocket_url(
                ws_url(server, "/topics/m/ws" + query), subprotocols=subprotocols
            ) as ws,
        ):
            start = msgpack.unpackb(await ws.get_message())
            assert start["event"] == "broker.start"
            async with httpx.AsyncClient(base_url=server.url) as client:
                await client.post("/topics/m", json=[1, {"a": None}])
            event = msgpack.unpackb(await ws.get_message())
            assert event["data"] == [1, {"a": None}]
            assert event["topic"] == "m"


async def test_resume_commands_and_errors():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                first = (await client.post("/topics/a", json=1)).json()["id"]
                await client.post("/topics/a", json=2)
                await client.post("/topics/b", json=3)
                async with open_websocket_url(
                    ws_url(server, f"/ws?topic=a&last_event_id={first}")
                ) as ws:
                    assert (await next_json(ws))["event"] == "broker.start"
                    assert (await next_json(ws))["data"] == 2
                    await ws.send_message(
                        json.dumps({"op": "subscribe", "topics": ["b"], "ref": 7})
                    )
                    ack = await next_json(ws)
                    assert ack["event"] == "broker.ack"
                    assert ack["data"] == {"ref": 7, "op": "subscribe", "topics": ["a", "b"]}
                    await client.post("/topics/b", json=4)
                    assert (await next_json(ws))["data"] == 4
                    await ws.send_message(json.dumps({"op": "unsubscribe", "topics": ["a"]}))
                    assert (await next_json(ws))["data"]["topics"] == ["b"]
                    for bad, code in [
                        ("{not json", "bad_request"),
                        ('{"op": "dance"}', "bad_request"),
                        ('{"op": "subscribe", "topics": ["bad topic"], "ref": "x"}', "bad_topic"),
                        ('{"op": "publish", "topic": "a", "data": 1}', "forbidden"),
                    ]:
                        await ws.send_message(bad)
                        answer = await next_json(ws)
                        assert answer["event"] == "broker.command_error"
                        assert answer["data"]["code"] == code
                    # still subscribed and serving after all that
                    await client.post("/topics/b", json=5)
                    assert (await next_json(ws))["data"] == 5


async def test_publish_over_websocket_when_allowed():
    with trio.fail_after(10):
        async with open_broker_server(websocket={"allow_publish": True}) as server:
            async with open_websocket_url(ws_url(server, "/topics/p/ws")) as ws:
                await next_json(ws)
                await ws.send_message(
                    json.dumps(
                        {"op": "publish", "topic": "p", "data": "hi", "event": "greet", "ref": 1}
                    )
                )
                messages = [await next_json(ws), await next_json(ws)]
                ack = next(m for m in messages if m["event"] == "broker.ack")
                event = next(m for m in messages if m["event"] == "greet")
                assert ack["data"]["id"] == event["id"]
                assert event["data"] == "hi"


async def test_oversized_message_closes_with_1009():
    with trio.fail_after(10):
        async with open_broker_server(websocket={"max_message_bytes": 1000}) as server:
            async with open_websocket_url(ws_url(server, "/topics/o/ws")) as ws:
                await next_json(ws)
                await ws.send_message("x" * 5000)
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.get_message()
                assert ws.closed.code == 1009
            await wait_for(lambda: server.hub.statistics().subscribers == 0)


async def raw_upgrade(server, path="/topics/r/ws", extra=b""):
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        + extra
    )
    return stream


async def test_client_that_never_answers_pings_is_dropped():
    with trio.fail_after(10):
        async with open_broker_server(
            websocket={"ping_interval_seconds": 0.2, "ping_timeout_seconds": 0.2}
        ) as server:
            mute = await raw_upgrade(server)
            await wait_for(lambda: server.hub.statistics().subscribers == 1)
            await wait_for(lambda: server.hub.statistics().subscribers == 0)
            received = b""
            while chunk := await mute.receive_some(4096):
                received += chunk
            assert b"\x89\x00" in received  # it was pinged first
            await mute.aclose()


async def test_client_that_answers_pings_stays():
    with trio.fail_after(10):
        async with (
            open_broker_server(
                websocket={"ping_interval_seconds": 0.1, "ping_timeout_seconds": 0.1}
            ) as server,
            open_websocket_url(ws_url(server, "/topics/k/ws")) as ws,
        ):
            await next_json(ws)
            await trio.sleep(1)  # ten ping intervals: trio-websocket answers each
            async with httpx.AsyncClient(base_url=server.url) as client:
                await client.post("/topics/k", json="alive")
            assert (await next_json(ws))["data"] == "alive"


async def read_until_closed(stream):
    received = b""
    while chunk := await stream.receive_some(65536):
        received += chunk
    await stream.aclose()
    return received


async def test_upgrade_with_stray_bytes_does_not_hurt_the_server():
    """hypercorn issue 225: an upgrade followed by stray bytes took the server down."""
    with trio.fail_after(10):
        async with open_broker_server(
            websocket={
                "ping_interval_seconds": 0.3,
                "ping_timeout_seconds": 0.3,
                "max_message_bytes": 1000,
            }
        ) as server:
            # complete but invalid frames: answered with a close frame, 1002
            for extra in [
                b"\x81\x02hi",  # unmasked
                b"GET / HTTP/1.1\r\n\r\n" + b"x" * 100,  # reserved opcode
                b"\x00\xff garbage \r\n\r\n",  # continuation of nothing
            ]:
                received = await read_until_closed(await raw_upgrade(server, extra=extra))
                assert b"\x88" in received
                assert b"\x03\xea" in received  # close, code 1002
            # a frame that never completes: dropped once it stops answering pings
            received = await read_until_closed(
                await raw_upgrade(server, extra=b"\x81\xfe\x01\xf4" + b"mask" + b"0123456789")
            )
            assert b"\x89\x00" in received
            # a frame that announces more than the limit and keeps coming: 1009
            stream = await raw_upgrade(server, extra=b"\x82\xff" + (2**40).to_bytes(8, "big"))
            with trio.move_on_after(5):
                try:
                    for _ in range(100):
                        await stream.send_all(b"\x00" * 100)
                except trio.BrokenResourceError:
                    pass
            assert b"\x88" in await read_until_closed(stream)
            # a request that is no valid upgrade: 400
            bad = await trio.open_tcp_stream("127.0.0.1", server.port)
            await bad.send_all(b"GET /ws?topic=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
            assert (await read_until_closed(bad)).startswith(b"HTTP/1.1 400 ")
            # and everyone else is still served
            async with open_websocket_url(ws_url(server, "/topics/r/ws")) as ws:
                assert (await next_json(ws))["event"] == "broker.start"
            await wait_for(lambda: server.dataplane.statistics().connections == 0)


async def test_shutdown_notice_then_close_1001():
    with trio.fail_after(10):
        async with open_broker_server() as server:
            async with open_websocket_url(ws_url(server, "/topics/s/ws")) as ws:
                await next_json(ws)
                server.request_shutdown()
                final = await next_json(ws)
                assert final["event"] == "broker.shutdown"
                assert final["data"]["retry_ms"] > 0
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
                assert ws.closed.code == 1001


async def test_slow_websocket_reader_gets_a_drop_notice():
    with trio.fail_after(20):
        async with open_broker_server(stream={"queue_events": 4}) as server:
            stream = await raw_upgrade(server, "/topics/slow/ws")
            await wait_for(lambda: server.hub.statistics().subscribers == 1)
            async with httpx.AsyncClient(base_url=server.url) as client:
                for n in range(200):
                    await client.post("/topics/slow", json={"n": n, "pad": "x" * 50_000})
            assert server.hub.statistics().dropped > 0
            data = b""
            while b"broker.dropped" not in data:
                data += await stream.receive_some(1 << 20)
            await stream.aclose()


async def test_websocket_churn_returns_to_zero(task_count):
    with trio.fail_after(30):
        async with open_broker_server() as server:
            await wait_for(lambda: server.dataplane.statistics().connections == 0)
            baseline = task_count()
            for _ in range(5):
                async with trio.open_nursery() as nursery:
                    for n in range(40):

                        async def one(n=n):
                            async with open_websocket_url(
                                ws_url(server, f"/topics/c{n % 3}/ws")
                            ) as ws:
                                await next_json(ws)

                        nursery.start_soon(one)
            await wait_for(lambda: server.hub.statistics().subscribers == 0)
            await wait_for(lambda: server.dataplane.statistics().connections == 0)
            assert server.streams.statistics().open == 0
            await wait_for(lambda: task_count() == baseline)
