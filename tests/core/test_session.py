"""The stream session without sockets: each step of open_stream, on an in-memory transport.

Every transport (raw SSE, SSE over ASGI, WebSocket) opens its streams through
``open_stream``; these tests drive it with a transport that records what it was asked to do,
so the order of the steps and the cleanup are checked once, for all of them.
"""

from __future__ import annotations

from functools import partial

import jwt
import trio
import trio.testing

from broker.core.errors import ClientError
from broker.edge.auth import Authenticator, Identity
from broker.edge.policy import Policy
from broker.edge.routes import match
from broker.edge.session import Limits, Streams, open_stream, publish
from broker.hub import Hub, Unavailable, open_hub
from broker.hub.subscriber import Subscriber
from broker.wire.sse import SseCodec
from tests.core.test_hub import MemorySink


class RecordingTransport:
    """A transport that records each step and serves until told the client left."""

    kind = "sse"

    def __init__(self, *, over_answers: bool = True) -> None:
        self.steps: list[str] = []
        self.sink_ = MemorySink()
        self.client_left = trio.Event()
        self.serving = trio.Event()
        self.over_answers = over_answers
        self.refused: ClientError | None = None
        self.identity: Identity | None = None

    async def refuse(self, error: ClientError) -> None:
        self.steps.append("refuse")
        self.refused = error

    async def degrade(self, error: Unavailable, resume_from: str | None) -> None:
        self.steps.append("degrade")

    async def over(self) -> bool:
        self.steps.append("over")
        return self.over_answers

    async def accept(self) -> bytes | None:
        self.steps.append("accept")
        return b"HEAD\n"

    def sink(self) -> MemorySink:
        return self.sink_

    def codec(self) -> SseCodec:
        return SseCodec()

    async def serve(self, subscriber: Subscriber, nursery: trio.Nursery, identity) -> None:
        self.steps.append("serve")
        self.identity = identity
        self.serving.set()
        await self.client_left.wait()

    async def finish(self, subscriber: Subscriber) -> None:
        self.steps.append(f"finish:{subscriber.end_reason}")


def streams_for(hub: Hub, policy: Policy | None = None) -> Streams:
    return Streams(hub, policy or Policy(), Limits())


async def test_a_stream_opens_in_order_delivers_and_leaves_nothing_behind():
    async with open_hub() as hub:
        streams = streams_for(hub)
        transport = RecordingTransport()
        route = match("GET", "/topics/t/events")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(open_stream, streams, transport, route, {}, peer="p"))
            await transport.serving.wait()
            assert streams.statistics().open == 1
            assert hub.statistics().subscribers == 1
            hub.publish_nowait("t", "hello")
            assert b"HEAD\n" in transport.sink_.written  # what accept returned goes first
            assert transport.sink_.written.index(b"HEAD\n") == 0
            assert b"data: hello" in transport.sink_.written
            transport.client_left.set()
        assert transport.steps == ["accept", "serve", "finish:gone"]
        assert streams.statistics().open == 0
        assert streams.statistics().opened_total == 1
        assert hub.statistics().subscribers == 0
        assert hub.statistics().subscriptions == 0


async def test_a_refused_request_is_answered_and_never_subscribed():
    secret = "s" * 32
    policy = Policy(auth=Authenticator(key=secret, anonymous_subscribe=()))
    async with open_hub() as hub:
        streams = streams_for(hub, policy)
        transport = RecordingTransport()
        identity = await open_stream(
            streams, transport, match("GET", "/topics/private/events"), {}, peer="p"
        )
        assert identity is None
        assert transport.steps == ["refuse"]
        assert transport.refused is not None
        assert transport.refused.status == 401
        assert streams.statistics().opened_total == 0


async def test_the_admitted_identity_reaches_the_transport():
    secret = "s" * 32
    policy = Policy(auth=Authenticator(key=secret, anonymous_subscribe=()))
    token = jwt.encode({"sub": "ana", "subscribe": ["jobs/*"], "exp": 4102444800}, secret)
    async with open_hub() as hub:
        transport = RecordingTransport()
        route = match("GET", "/topics/jobs/1/events")
        headers = {"authorization": f"Bearer {token}"}
        async with trio.open_nursery() as nursery:
            streams = streams_for(hub, policy)
            nursery.start_soon(partial(open_stream, streams, transport, route, headers, peer="p"))
            await transport.serving.wait()
            transport.client_left.set()
        assert transport.identity is not None
        assert transport.identity.subject == "ana"


async def test_a_client_with_every_event_of_a_closed_topic_gets_over():
    async with open_hub() as hub:
        final = hub.publish_nowait("done", "bye", final=True)
        transport = RecordingTransport()
        route = match("GET", "/topics/done/events")
        await open_stream(streams_for(hub), transport, route, {"last-event-id": final.id}, peer="")
        assert transport.steps == ["over"]


async def test_a_transport_may_stream_past_over_and_the_replay_ends_it():
    async with open_hub() as hub:
        final = hub.publish_nowait("done", "bye", final=True)
        transport = RecordingTransport(over_answers=False)
        route = match("GET", "/topics/done/events")
        with trio.fail_after(5):
            await open_stream(
                streams_for(hub), transport, route, {"last-event-id": final.id}, peer="p"
            )
        assert transport.steps[:2] == ["over", "accept"]
        assert transport.steps[-1] != "finish:gone"  # the broker ended it, not the client


async def test_publish_on_the_memory_engine_has_no_checkpoint():
    """One publish entry, always a coroutine; on the memory engine it never yields."""
    async with open_hub() as hub:
        route = match("POST", "/topics/t")
        coroutine = publish(hub, Policy(), route, {"content-type": "text/plain"}, b"x", "p")
        with trio.testing.assert_no_checkpoints():
            try:
                coroutine.send(None)
            except StopIteration as done:
                answer = done.value
        assert answer["topic"] == "t"
        assert hub.statistics().published == 1
