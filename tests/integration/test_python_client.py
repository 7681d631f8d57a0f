"""The Python client (clients/python) against real brokers, real sockets and small fakes.

Every test runs under ``trio.fail_after`` and waits for conditions (an event, a notice), never
for a duration. Fakes (a TCP proxy that blocks SSE, a scripted SSE server, a silent listener)
sit on real sockets in this trio run.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qs, urlsplit

import broker_client
import pytest
import trio
from broker_client import (
    BrokerClient,
    BrokerTimeout,
    BrokerUnavailable,
    ClientError,
    Dropped,
    Ended,
    Event,
    FailedOver,
    Notice,
    PublishItem,
    Reconnecting,
    Reset,
    ServerError,
    Subscription,
    TransportChanged,
)
from broker_client._cli import pub_main, sub_main
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws_events

from tests.support.servers import ROOT, BrokerProcess, open_broker_server

FAST_BACKOFF = (0.05, 0.1, 0.2)


async def take(events: Subscription, count: int) -> tuple[list[Event], list[Notice]]:
    """The next ``count`` events, and the notices seen on the way."""
    got: list[Event] = []
    notices: list[Notice] = []
    async for item in events:
        if isinstance(item, Event):
            got.append(item)
            if len(got) == count:
                break
        else:
            notices.append(item)
    return got, notices


async def wait_for_notice(events: Subscription, kind: type[Notice]) -> tuple[Notice, list[Event]]:
    """Read until a notice of ``kind``; returns it and the events read before it."""
    before: list[Event] = []
    async for item in events:
        if isinstance(item, kind):
            return item, before
        if isinstance(item, Event):
            before.append(item)
    raise AssertionError(f"the subscription ended without {kind.__name__}")


# --- fakes on real sockets --------------------------------------------------------------------


@dataclass
class Canned:
    """What a fake answers to one request: these bytes, then close (or hang when ``hang``)."""

    data: bytes
    hang: bool = False


def http_answer(status: str, content_type: str, body: bytes, *, close: bool = True) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body)}\r\n" if close else ""
    head += "Connection: close\r\n\r\n" if close else "\r\n"
    return head.encode() + body


@dataclass
class Fake:
    """A listener on a real port; ``requests`` holds every request line it saw."""

    url: str
    requests: list[str] = field(default_factory=list)


async def _pipe(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while chunk := await source.receive_some(65536):
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


@asynccontextmanager
async def open_fake(
    answer: Callable[[str], Canned | None], upstream: str | None = None
) -> AsyncIterator[Fake]:
    """A TCP server that answers a request with ``answer(request_line)``.

    When ``answer`` returns ``None`` the connection is forwarded to ``upstream`` byte for byte
    (WebSocket upgrades included).
    """
    fake = Fake(url="")

    async def handler(client: trio.SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await client.receive_some(65536)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            fake.requests.append(line)
            canned = answer(line)
            if canned is not None:
                await client.send_all(canned.data)
                if canned.hang:
                    await trio.sleep_forever()
                return
            assert upstream is not None
            parts = urlsplit(upstream)
            async with await trio.open_tcp_stream(parts.hostname, parts.port) as server:
                await server.send_all(head)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pipe, client, server, nursery.cancel_scope)
                    nursery.start_soon(_pipe, server, client, nursery.cancel_scope)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        fake.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()


def sse_frame(event_id: str, event: str, data: object) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


def envelope(event_id: str, topic: str, data: object) -> bytes:
    payload = {"id": event_id, "topic": topic, "event": None, "data": data}
    return f"id: {event_id}\ndata: {json.dumps(payload)}\n\n".encode()


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Connection: close\r\n\r\n"
)


class WsPeer:
    """The server side of one WebSocket connection, driven by a test script (wsproto)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.pending: deque[ws_events.Event] = deque()

    async def next_event(self) -> ws_events.Event | None:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.popleft()

    async def accept(self) -> str:
        while not isinstance(request := await self.next_event(), ws_events.Request):
            assert request is not None
        await self.stream.send_all(self.ws.send(ws_events.AcceptConnection()))
        return request.target

    async def reject(self, status: int, body: bytes) -> None:
        while not isinstance(await self.next_event(), ws_events.Request):
            pass
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        reject = ws_events.RejectConnection(status_code=status, headers=headers, has_body=True)
        await self.stream.send_all(self.ws.send(reject))
        await self.stream.send_all(self.ws.send(ws_events.RejectData(data=body)))

    async def send(self, message: dict[str, object]) -> None:
        await self.stream.send_all(self.ws.send(ws_events.TextMessage(json.dumps(message))))


def ws_notice(event_id: str, event: str, data: dict[str, object]) -> dict[str, object]:
    return {"id": event_id, "topic": None, "event": event, "data": data}


@asynccontextmanager
async def open_ws_fake(script: Callable[[WsPeer], Awaitable[None]]) -> AsyncIterator[Fake]:
    """A WebSocket server on a real port that runs ``script`` for each connection."""

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            await script(WsPeer(stream))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        try:
            yield Fake(url=f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}")
        finally:
            nursery.cancel_scope.cancel()


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_publish_subscribe_round_trip(transport: str) -> None:
    with trio.fail_after(20):
        async with (
            open_broker_server() as server,
            BrokerClient(server.url) as client,
            client.subscribe(["jobs", "alerts"], transport=transport) as events,
        ):
            assert events.transport == transport
            assert events.url == server.url
            sent = [
                await client.publish("jobs", {"progress": 0.4}, event="progress"),
                await client.publish("alerts", "line 1\nline 2 ✓"),
                await client.publish("jobs", [1, "two", None], msgpack=True),
                await client.publish("alerts", "packed text", msgpack=True),
                *await client.publish_batch(
                    [PublishItem("jobs", {"n": 1}, event="batch"), PublishItem("alerts", "t")]
                ),
            ]
            got, notices = await take(events, len(sent))
            assert notices == []
            assert [e.id for e in got] == sent
            assert [(e.topic, e.event, e.data) for e in got] == [
                ("jobs", "progress", {"progress": 0.4}),
                ("alerts", None, "line 1\nline 2 ✓"),
                ("jobs", None, [1, "two", None]),
                ("alerts", None, "packed text"),
                ("jobs", "batch", {"n": 1}),
                ("alerts", None, "t"),
            ]
            assert events.last_event_id == sent[-1]


async def test_subscribe_resumes_from_last_event_id() -> None:
    with trio.fail_after(20):
        async with open_broker_server() as server, BrokerClient(server.url) as client:
            ids = [await client.publish("r", {"n": n}) for n in range(4)]
            async with client.subscribe("r", last_event_id=ids[1]) as events:
                got, notices = await take(events, 2)
            assert [e.data["n"] for e in got] == [2, 3]
            assert notices == []


async def test_inexact_resume_is_a_reset_notice() -> None:
    with trio.fail_after(20):
        async with open_broker_server() as server, BrokerClient(server.url) as client:
            await client.publish("r", "before")
            async with client.subscribe("r", last_event_id="zzzzzz-5") as events:
                item = await events.receive()
                assert isinstance(item, Reset)
                assert (item.requested, item.reason) == ("zzzzzz-5", "unknown")
                assert item.position == events.last_event_id
                got, _ = await take(events, 1)
                assert got[0].data == "before"


async def test_leaving_the_subscription_ends_every_task(task_count) -> None:
    """Normal exit, an exception in the body and cancellation all leave no task behind."""
    with trio.fail_after(30):
        proc = BrokerProcess()
        await proc.astart()
        try:
            async with BrokerClient(proc.url) as client:
                for transport in ("sse", "ws"):
                    before = task_count()
                    async with client.subscribe("t", transport=transport) as events:
                        assert task_count() > before
                        await client.publish("t", 1)
                        await take(events, 1)
                    assert task_count() == before

                    with pytest.raises(KeyError):  # the caller's exception, not a group
                        async with client.subscribe("t", transport=transport):
                            raise KeyError("mine")
                    assert task_count() == before

                    with trio.CancelScope() as scope:
                        async with client.subscribe("t", transport=transport) as events:
                            scope.cancel()
                            await events.receive()
                    assert scope.cancelled_caught
                    assert task_count() == before
        finally:
            await trio.to_thread.run_sync(proc.kill)


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_retained_state_final_event_and_end_of_stream(transport: str) -> None:
    """Retained events share the start position as id and all arrive; a final event ends it."""
    with trio.fail_after(20):
        async with open_broker_server() as server, BrokerClient(server.url) as client:
            await client.publish("a", {"state": "old"}, event="status", retain=True)
            await client.publish("a", {"state": "new"}, event="status", retain=True)
            await client.publish("b", "b-state", retain=True)
            async with client.subscribe(["a", "b"], transport=transport) as events:
                start = events.last_event_id
                got, notices = await take(events, 2)
                assert sorted((e.topic, str(e.data)) for e in got) == [
                    ("a", "{'state': 'new'}"),
                    ("b", "b-state"),
                ]
                assert {e.id for e in got} == {start}
                assert notices == []
                await client.publish("a", "bye a", final=True)
                await client.publish("b", "bye b", final=True)
                rest = [item async for item in events]  # ends by itself: no reconnect
            assert [(type(i), getattr(i, "topic", None)) for i in rest] == [
                (Event, "a"),
                (Ended, "a"),
                (Event, "b"),
                (Ended, "b"),
            ]
            with pytest.raises(ClientError) as closed:
                await client.publish("a", "too late")
            assert closed.value.status == 409
            # Everything already seen: the broker answers 204 and the iteration is empty.
            last = events.last_event_id
            async with client.subscribe(["a", "b"], last_event_id=last) as again:
                assert [item async for item in again] == []


async def test_last_n_replays_recent_history_first() -> None:
    with trio.fail_after(20):
        async with open_broker_server() as server, BrokerClient(server.url) as client:
            for n in range(5):
                await client.publish("h", n)
            async with client.subscribe("h", last=2) as events:
                got, _ = await take(events, 2)
                assert [e.data for e in got] == [3, 4]


async def test_heartbeat_window_follows_the_broker_announcement() -> None:
    def answer(line: str) -> Canned:
        start = {"position": "h-0", "resumed": False, "heartbeat_seconds": 0.2}
        return Canned(SSE_HEAD + sse_frame("h-0", "broker.start", start), hang=True)

    with trio.fail_after(20):
        async with (
            open_fake(answer) as fake,
            BrokerClient(fake.url, backoff=FAST_BACKOFF) as client,
            client.subscribe("t", transport="sse") as events,
        ):
            notice, _ = await wait_for_notice(events, Reconnecting)
            assert isinstance(notice.error, BrokerTimeout)
            assert "silent for 0.5 s" in str(notice.error)


# --- the SSE → WebSocket fallback -------------------------------------------------------------


@pytest.mark.parametrize(
    "blocked",
    [
        http_answer("502 Bad Gateway", "text/html", b"<h1>no</h1>"),
        http_answer("200 OK", "text/html", b"<html>login</html>"),
    ],
    ids=["502", "html-200"],
)
async def test_sse_blocked_falls_back_to_websocket(blocked: bytes) -> None:
    def answer(line: str) -> Canned | None:
        return Canned(blocked) if "/events" in line else None

    with trio.fail_after(20):
        async with open_broker_server() as server, open_fake(answer, server.url) as proxy:
            async with (
                BrokerClient(proxy.url) as client,
                client.subscribe("jobs", transport="auto") as events,
            ):
                assert events.transport == "ws"
                event_id = await client.publish("jobs", {"via": "proxy"})
                got, notices = await take(events, 1)
                assert got[0].id == event_id
                assert [type(n) for n in notices] == [TransportChanged]
                assert notices[0].transport == "ws"
            assert [line.split()[1].split("?")[0] for line in proxy.requests[:2]] == [
                "/events",
                "/ws",
            ]


async def test_sse_without_broker_start_falls_back_to_websocket() -> None:
    def answer(line: str) -> Canned | None:
        if "/events" in line:
            return Canned(SSE_HEAD + b": buffering proxy\n\n", hang=True)
        return None

    with trio.fail_after(20):
        async with (
            open_broker_server() as server,
            open_fake(answer, server.url) as proxy,
            BrokerClient(proxy.url, timeout=1.0) as client,
            client.subscribe("jobs", transport="auto") as events,
        ):
            assert events.transport == "ws"


async def test_sse_stalling_twice_switches_to_websocket() -> None:
    """A stream that starts, then goes silent past the heartbeat window: twice → WebSocket."""

    def answer(line: str) -> Canned | None:
        if "/events" in line:
            return Canned(SSE_HEAD + sse_frame("s-0", "broker.start", {"position": "s-0"}), True)
        return None

    with trio.fail_after(30):
        async with open_broker_server() as server, open_fake(answer, server.url) as proxy:
            async with (
                BrokerClient(proxy.url, heartbeat_timeout=0.5, backoff=FAST_BACKOFF) as client,
                client.subscribe("jobs", transport="auto") as events,
            ):
                assert events.transport == "sse"
                switched, _ = await wait_for_notice(events, TransportChanged)
                assert "silent" in switched.reason
                event_id = await client.publish("jobs", "after")
                got, _ = await take(events, 1)
                assert got[0].id == event_id
                assert events.transport == "ws"
            assert sum("/events" in line for line in proxy.requests) == 2


async def test_connection_refused_is_not_a_reason_to_switch() -> None:
    with trio.fail_after(20):
        async with open_broker_server() as server:
            dead = await _dead_url()
            async with (
                BrokerClient([dead, server.url], backoff=FAST_BACKOFF) as client,
                client.subscribe("jobs", transport="auto") as events,
            ):
                assert (events.transport, events.url) == ("sse", server.url)


async def _dead_url() -> str:
    """A loopback URL where nothing listens (bound, then closed)."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# --- reconnects, resume and failover ----------------------------------------------------------


async def test_resume_after_broker_restart_has_no_loss_and_no_duplicate() -> None:
    with trio.fail_after(60):
        proc = BrokerProcess()
        await proc.astart()
        try:
            async with (
                BrokerClient(proc.url, backoff=(0.2, 0.5, 1.0)) as client,
                client.subscribe("r", transport="sse") as events,
            ):
                first = [await client.publish("r", {"n": n}) for n in range(3)]
                got, _ = await take(events, 3)
                assert [e.id for e in got] == first

                await trio.to_thread.run_sync(proc.kill)
                await proc.astart()  # same port, empty history, new origin
                # Published before the client is back: must be replayed, not lost.
                second = [await client.publish("r", {"n": n}) for n in range(3, 6)]
                more, notices = await take(events, 3)
                third = [await client.publish("r", {"n": n}) for n in range(6, 8)]
                live, _ = await take(events, 2)

            everything = got + more + live
            assert [e.data["n"] for e in everything] == list(range(8))
            assert [e.id for e in everything] == first + second + third
            assert any(isinstance(n, Reconnecting) for n in notices)
            resets = [n for n in notices if isinstance(n, Reset)]
            assert len(resets) == 1
            assert (resets[0].requested, resets[0].reason) == (first[-1], "unknown")
        finally:
            await trio.to_thread.run_sync(proc.kill)


async def test_failover_to_the_next_node_when_one_is_killed() -> None:
    with trio.fail_after(60):
        a, b = BrokerProcess(), BrokerProcess()
        await a.astart()
        await b.astart()
        try:
            async with (
                BrokerClient([a.url, b.url], backoff=(0.2, 0.5, 1.0)) as client,
                client.subscribe(["jobs"], transport="auto") as events,
            ):
                assert events.url == a.url
                await client.publish("jobs", "on a")
                got, _ = await take(events, 1)
                assert got[0].data == "on a"

                await trio.to_thread.run_sync(a.kill)
                # The publish fails over too: a refuses the connection, b takes it.
                on_b = await client.publish("jobs", "on b")
                failed_over, _ = await wait_for_notice(events, FailedOver)
                assert failed_over.url == b.url
                more, _ = await take(events, 1)
                assert (more[0].id, more[0].data) == (on_b, "on b")
                assert (events.url, events.transport) == (b.url, "sse")
                live = await client.publish("jobs", "live on b")
                again, _ = await take(events, 1)
                assert again[0].id == live
        finally:
            await trio.to_thread.run_sync(a.kill)
            await trio.to_thread.run_sync(b.kill)


async def test_broker_shutdown_notice_reconnects_to_the_next_node() -> None:
    with trio.fail_after(30):
        fast = {"retry_ms": 100}
        async with (
            open_broker_server(stream=fast) as a,
            open_broker_server(stream=fast) as b,
            BrokerClient([a.url, b.url]) as client,
            client.subscribe("jobs", transport="sse") as events,
        ):
            a.request_shutdown()
            reconnecting, _ = await wait_for_notice(events, Reconnecting)
            assert reconnecting.error is None  # asked by the broker, not a failure
            assert 0.05 <= reconnecting.delay <= 0.2
            failed_over, _ = await wait_for_notice(events, FailedOver)
            assert failed_over.url == b.url
            event_id = await client.publish("jobs", "hello b")
            got, _ = await take(events, 1)
            assert got[0].id == event_id


async def test_replayed_duplicates_are_never_delivered_twice() -> None:
    """A node that resumes inexactly and repeats ids: the client hands each id out once."""
    connections: list[str] = []

    def answer(line: str) -> Canned:
        connections.append(line)
        start = sse_frame("p-0", "broker.start", {"position": "p-0", "resumed": False})
        if len(connections) == 1:
            return Canned(SSE_HEAD + start + envelope("p-1", "t", 1) + envelope("p-2", "t", 2))
        again = envelope("p-2", "t", 2) + envelope("p-1", "t", 1) + envelope("p-3", "t", 3)
        return Canned(SSE_HEAD + start + again, hang=True)

    with trio.fail_after(20):
        async with (
            open_fake(answer) as fake,
            BrokerClient(fake.url, backoff=FAST_BACKOFF) as client,
            client.subscribe("t", transport="sse") as events,
        ):
            got, notices = await take(events, 3)
            assert [e.data for e in got] == [1, 2, 3]
            assert [type(n) for n in notices] == [Reconnecting]
    query = parse_qs(urlsplit(connections[1].split()[1]).query)
    assert query["last_event_id"] == ["p-2"]
    assert query["envelope"] == ["1"]
    assert query["topic"] == ["t"]


async def test_dropped_notice_is_yielded() -> None:
    def answer(line: str) -> Canned:
        return Canned(
            SSE_HEAD
            + sse_frame("d-0", "broker.start", {"position": "d-0", "resumed": False})
            + envelope("d-1", "t", 1)
            + sse_frame("d-1", "broker.dropped", {"dropped": 5, "resume_from": "d-1"})
            + envelope("d-7", "t", 7),
            hang=True,
        )

    with trio.fail_after(20):
        async with (
            open_fake(answer) as fake,
            BrokerClient(fake.url) as client,
            client.subscribe("t", transport="sse") as events,
        ):
            got, notices = await take(events, 2)
            assert [e.data for e in got] == [1, 7]
            assert notices == [Dropped(count=5, resume_from="d-1")]


async def test_websocket_transport_against_a_scripted_server() -> None:
    """Frames, shutdown → reconnect with last_event_id, and duplicate ids after it."""
    targets: list[str] = []

    async def script(peer: WsPeer) -> None:
        targets.append(await peer.accept())
        await peer.send(ws_notice("w-0", "broker.start", {"position": "w-0", "resumed": False}))
        if len(targets) == 1:
            await peer.send({"id": "w-1", "topic": "t", "event": None, "data": {"n": 1}})
            await peer.send({"id": "w-2", "topic": "t", "event": "typed", "data": "two"})
            await peer.send(ws_notice("w-2", "broker.shutdown", {"retry_ms": 20}))
            return  # the broker closes the connection after its shutdown notice
        else:
            await peer.send({"id": "w-2", "topic": "t", "event": "typed", "data": "two"})
            await peer.send({"id": "w-3", "topic": "t", "event": None, "data": [3]})
        await trio.sleep_forever()

    with trio.fail_after(20):
        async with (
            open_ws_fake(script) as fake,
            BrokerClient(fake.url) as client,
            client.subscribe(["t", "u"], transport="ws") as events,
        ):
            assert events.transport == "ws"
            got, notices = await take(events, 3)
    assert [(e.id, e.event, e.data) for e in got] == [
        ("w-1", None, {"n": 1}),
        ("w-2", "typed", "two"),
        ("w-3", None, [3]),
    ]
    [notice] = notices
    assert isinstance(notice, Reconnecting)
    assert notice.error is None  # asked by the broker (shutdown), not a failure
    assert targets == ["/ws?topic=t&topic=u", "/ws?topic=t&topic=u&last_event_id=w-2"]


async def test_websocket_rejection_is_a_client_error() -> None:
    async def script(peer: WsPeer) -> None:
        await peer.reject(400, b'{"error": "bad topic", "code": "bad_topic"}')

    with trio.fail_after(20):
        async with open_ws_fake(script) as fake, BrokerClient(fake.url) as client:
            with pytest.raises(ClientError) as error:
                async with client.subscribe("t", transport="ws"):
                    pass
            assert (error.value.status, error.value.code) == (400, "bad_topic")


@pytest.mark.parametrize("answer_pings", [True, False])
async def test_websocket_silence_is_probed_with_pings(answer_pings: bool) -> None:
    """A silent but answering server stays connected; one that stops answering is dropped."""
    pings = 0

    async def script(peer: WsPeer) -> None:
        nonlocal pings
        await peer.accept()
        await peer.send(ws_notice("p-0", "broker.start", {"position": "p-0", "resumed": False}))
        while (event := await peer.next_event()) is not None:
            if isinstance(event, ws_events.Ping):
                pings += 1
                if answer_pings:
                    await peer.stream.send_all(peer.ws.send(event.response()))
                if pings == 4:  # well past one heartbeat window of silence
                    await peer.send({"id": "p-1", "topic": "t", "event": None, "data": pings})

    with trio.fail_after(20):
        async with (
            open_ws_fake(script) as fake,
            BrokerClient(fake.url, heartbeat_timeout=1.0, backoff=FAST_BACKOFF) as client,
            client.subscribe("t", transport="ws") as events,
        ):
            item = await events.receive()
    if answer_pings:
        assert item == Event("p-1", "t", None, 4)
    else:
        assert isinstance(item, Reconnecting)
        assert isinstance(item.error, BrokerTimeout)
        assert pings == 1


# --- errors -----------------------------------------------------------------------------------


async def test_bad_urls() -> None:
    with pytest.raises(ValueError, match="broker URL"):
        BrokerClient("ftp://example.com")
    with pytest.raises(ValueError, match="broker URL"):
        BrokerClient("localhost:8080")
    with pytest.raises(ValueError, match="at least one"):
        BrokerClient([])
    with trio.fail_after(20):
        dead = await _dead_url()
        async with BrokerClient([dead, dead + "/"], timeout=1.0) as client:
            with pytest.raises(BrokerUnavailable, match="no broker reachable"):
                await client.publish("t", 1)
            with pytest.raises(BrokerUnavailable):
                async with client.subscribe("t"):
                    pass


async def test_client_errors_carry_status_and_code() -> None:
    with trio.fail_after(20):
        async with open_broker_server() as server, BrokerClient(server.url) as client:
            with pytest.raises(ClientError) as bad_topic:
                await client.publish("bad topic!", 1)
            assert bad_topic.value.status == 400
            assert bad_topic.value.code
            assert bad_topic.value.message
            with pytest.raises(ClientError) as bad_type:
                await client.publish("t", 1, event="broker.mine")
            assert bad_type.value.status == 400
            with pytest.raises(ClientError):
                await client.publish_batch([PublishItem("t", 1), PublishItem("../x", 2)])
            with pytest.raises(ValueError, match="at least one item"):
                await client.publish_batch([])
            with pytest.raises(TypeError, match="bytes"):
                await client.publish("t", b"raw")
            for transport in ("sse", "ws", "auto"):
                with pytest.raises(ClientError) as subscribe_error:
                    async with client.subscribe("bad topic!", transport=transport):
                        pass
                assert subscribe_error.value.status == 400
            assert server.hub.statistics().published == 0


async def test_timeouts() -> None:
    def silent(line: str) -> Canned:
        return Canned(b"", hang=True)

    with trio.fail_after(20):
        async with open_fake(silent) as fake, BrokerClient(fake.url, timeout=0.5) as client:
            with pytest.raises(BrokerTimeout, match="may or may not"):
                await client.publish("t", 1)
            with pytest.raises(BrokerTimeout):
                async with client.subscribe("t", transport="sse"):
                    pass
            assert len(fake.requests) >= 2


async def test_5xx_is_not_retried_on_another_node() -> None:
    def failing(line: str) -> Canned:
        return Canned(http_answer("503 Service Unavailable", "text/plain", b"overloaded"))

    with trio.fail_after(20):
        async with (
            open_fake(failing) as fake,
            open_broker_server() as server,
            BrokerClient([fake.url, server.url]) as client,
        ):
            with pytest.raises(ServerError) as error:
                await client.publish("t", 1)
            assert error.value.status == 503
            assert "overloaded" in error.value.message
            assert len(fake.requests) == 1
            assert server.hub.statistics().published == 0


# --- the sync helper and the CLI -------------------------------------------------------------


async def test_sync_publish_helper() -> None:
    with trio.fail_after(20):
        async with (
            open_broker_server() as server,
            BrokerClient(server.url) as client,
            client.subscribe("s") as events,
        ):
            event_id = await trio.to_thread.run_sync(
                lambda: broker_client.publish(server.url, "s", {"sync": True}, event="x")
            )
            got, _ = await take(events, 1)
            assert (got[0].id, got[0].event, got[0].data) == (event_id, "x", {"sync": True})
            with pytest.raises(ClientError):
                await trio.to_thread.run_sync(lambda: broker_client.publish(server.url, "", 1))


async def test_cli_pub_and_sub(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(30):
        async with open_broker_server() as server:
            url = server.url

            def pub(*argv: str) -> int:
                return pub_main([*argv, "--url", url])

            assert await trio.to_thread.run_sync(pub, "c", '{"a": 1}', "--event", "made") == 0
            first_id = capsys.readouterr().out.strip()
            assert await trio.to_thread.run_sync(pub, "c", "plain words") == 0
            assert await trio.to_thread.run_sync(pub, "c", "42", "--text") == 0
            assert await trio.to_thread.run_sync(pub, "c", "not json", "--json") == 2
            assert await trio.to_thread.run_sync(pub, "bad topic!", "x") == 2
            capsys.readouterr()

            def sub(*argv: str) -> int:
                return sub_main(["c", "--url", url, "--from-id", first_id, "-n", "2", *argv])

            assert await trio.to_thread.run_sync(sub) == 0
            assert capsys.readouterr().out.splitlines() == ["c message plain words", "c message 42"]
            assert await trio.to_thread.run_sync(sub, "--json", "--transport", "sse") == 0
            lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert [(r["topic"], r["event"], r["data"]) for r in lines] == [
                ("c", None, "plain words"),
                ("c", None, "42"),
            ]
            dead = await _dead_url()
            code = await trio.to_thread.run_sync(
                lambda: sub_main(["c", "--url", dead, "--timeout", "0.5"])
            )
            assert code == 1
            assert "error" in capsys.readouterr().err


async def test_python_dash_m_broker_client_pub() -> None:
    with trio.fail_after(30):
        async with open_broker_server() as server, BrokerClient(server.url) as client:
            async with client.subscribe("m") as events:
                result = await trio.run_process(
                    [sys.executable, "-m", "broker_client", "pub", "m", "-", "--url", server.url],
                    stdin=b"from stdin\n",
                    capture_stdout=True,
                    cwd=ROOT,
                )
                event_id = result.stdout.decode().strip()
                got, _ = await take(events, 1)
                assert (got[0].id, got[0].data) == (event_id, "from stdin")
            result = await trio.run_process(
                [sys.executable, "-m", "broker_client"], check=False, capture_stderr=True
            )
            assert result.returncode == 2
