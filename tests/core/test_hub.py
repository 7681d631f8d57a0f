"""Hub and subscriber without sockets: write-through, backpressure, eviction, heartbeats."""

import pytest
import trio
import trio.testing

from broker.hub import Hub, PublishItem, open_hub
from broker.hub.subscriber import Subscriber
from broker.wire.sse import SseCodec


class MemorySink:
    """A transport that takes at most ``room`` more bytes until the test drains it."""

    def __init__(self, room: int = 1 << 30) -> None:
        self.room = room
        self.written = bytearray()
        self._more = trio.Event()

    def send_nowait(self, data) -> int:
        taken = min(len(data), self.room)
        self.written += bytes(data[:taken])
        self.room -= taken
        return taken

    async def send(self, data) -> int:
        while self.room == 0:
            await self._more.wait()
            self._more = trio.Event()
        return self.send_nowait(data)

    def allow(self, count: int) -> None:
        self.room += count
        self._more.set()


class CountingSink(MemorySink):
    writes = 0

    def send_nowait(self, data) -> int:
        self.writes += 1
        return super().send_nowait(data)


def make_subscriber(nursery, sink, **options):
    scope = trio.CancelScope()
    defaults = dict(position="", max_events=4, max_bytes=1 << 20, send_timeout=5.0)
    defaults.update(options)
    return Subscriber(sink=sink, codec=SseCodec(), nursery=nursery, cancel_scope=scope, **defaults)


def events_in(data: bytes) -> list[bytes]:
    return [block for block in bytes(data).split(b"\n\n") if block.startswith(b"id:")]


def data_of(data: bytes) -> list[bytes]:
    """The data of the events (not notices) in an SSE byte stream."""
    return [e.split(b"data: ")[1] for e in events_in(data) if b"event: broker." not in e]


async def test_publish_has_no_checkpoint_and_writes_through_without_a_task():
    hub = Hub(history_size=10)
    async with trio.open_nursery() as nursery:
        sinks = [MemorySink() for _ in range(3)]
        subscribers = [make_subscriber(nursery, s) for s in sinks]
        with (
            hub.subscribe(subscribers[0], ["t"]),
            hub.subscribe(subscribers[1], ["t"]),
            hub.subscribe(subscribers[2], ["other"]),
        ):
            await trio.testing.wait_all_tasks_blocked()
            tasks_before = len(nursery.child_tasks)
            with trio.testing.assert_no_checkpoints():
                event = hub.publish_nowait("t", "hello", event_type="x")
                hub.publish_batch_nowait([PublishItem("t", "a"), PublishItem("other", "b")])
            assert len(nursery.child_tasks) == tasks_before  # nobody was woken
            assert sinks[0].written.endswith(b"\ndata: a\n\n")
            assert event.sse in sinks[0].written
            assert event.sse in sinks[1].written
            assert event.sse not in sinks[2].written
        assert hub.statistics().subscribers == 0
        assert hub.statistics().subscriptions == 0


async def test_a_batch_reaches_each_subscriber_in_one_write_in_order():
    hub = Hub(history_size=100)
    async with trio.open_nursery() as nursery:
        both, only_b = CountingSink(), CountingSink()
        with (
            hub.subscribe(make_subscriber(nursery, both, max_events=100), ["a", "b"]),
            hub.subscribe(make_subscriber(nursery, only_b, max_events=100), ["b"]),
        ):
            both.writes = only_b.writes = 0  # past each stream's broker.start
            only_b.room = 10  # only_b pushes back mid-batch
            items = [PublishItem("a" if i % 2 else "b", f"e{i}") for i in range(10)]
            with trio.testing.assert_no_checkpoints():
                hub.publish_batch_nowait(items)
            assert both.writes == 1
            assert data_of(both.written) == [f"e{i}".encode() for i in range(10)]
            assert only_b.writes == 1  # the rest waits for the writer task, in order
            only_b.allow(1 << 20)
            await trio.testing.wait_all_tasks_blocked()
            assert data_of(only_b.written) == [f"e{i}".encode() for i in range(0, 10, 2)]
            hub.publish_nowait("a", "after")
            assert both.writes == 2
            assert both.written.endswith(b"data: after\n\n")


async def test_a_burst_is_coalesced_but_paced_events_are_written_at_once():
    async with open_hub(history_size=100) as hub, trio.open_nursery() as nursery:
        sink = CountingSink()
        with hub.subscribe(make_subscriber(nursery, sink, max_events=100), ["t"]):
            await trio.testing.wait_all_tasks_blocked()
            sink.writes = 0  # past broker.start
            for n in range(3):  # paced: one event per pass of the run loop
                hub.publish_nowait("t", f"p{n}")
                assert sink.writes == n + 1  # written through at once
                await trio.testing.wait_all_tasks_blocked()
            with trio.testing.assert_no_checkpoints():
                for n in range(10):  # a burst: ten events in one pass
                    hub.publish_nowait("t", f"b{n}")
            assert sink.writes == 3 + 2  # the first two at once, the rest held
            await trio.testing.wait_all_tasks_blocked()
            assert sink.writes == 3 + 3  # the flusher wrote the held eight as one
            assert data_of(sink.written) == [f"p{n}".encode() for n in range(3)] + [
                f"b{n}".encode() for n in range(10)
            ]


async def test_frames_are_shared_bytes_objects():
    hub = Hub()
    event = hub.publish_nowait("t", "x")
    assert SseCodec().frame(event) is SseCodec().frame(event) is event.sse
    assert event.sse_envelope() is event.sse_envelope()


async def test_backpressure_queues_drops_oldest_and_notifies():
    hub = Hub(history_size=100)
    async with trio.open_nursery() as nursery:
        sink = MemorySink(room=0)
        subscriber = make_subscriber(nursery, sink, max_events=3)
        with hub.subscribe(subscriber, ["t"]):
            assert subscriber.busy  # even the start notice did not fit
            ids = [hub.publish_nowait("t", f"e{n}").id for n in range(10)]
            assert len(subscriber.mailbox) == 3
            sink.allow(1 << 20)
            await trio.testing.wait_all_tasks_blocked()
            assert not subscriber.busy  # the writer drained everything and exited
            blocks = events_in(sink.written)
            assert blocks[0].startswith(b"id: ")
            assert b"broker.start" in blocks[0]
            # e0..e6 were queued first, then dropped: the notice names 7 and the start id
            assert b"broker.dropped" in blocks[1]
            assert b'"dropped":7' in blocks[1]
            assert [b.split(b"data: ")[1] for b in blocks[2:]] == [b"e7", b"e8", b"e9"]
            assert subscriber.position == ids[-1]
            # back to write-through
            hub.publish_nowait("t", "live")
            assert sink.written.endswith(b"data: live\n\n")


async def test_partial_write_keeps_the_tail_and_order():
    hub = Hub()
    async with trio.open_nursery() as nursery:
        sink = MemorySink()
        subscriber = make_subscriber(nursery, sink, max_events=1)
        with hub.subscribe(subscriber, ["t"]):
            sink.room = 5
            hub.publish_nowait("t", "first-event-is-long")
            hub.publish_nowait("t", "second")
            hub.publish_nowait("t", "third")  # drops "second", never the tail of "first"
            sink.allow(1000)
            await trio.testing.wait_all_tasks_blocked()
            text = bytes(sink.written)
            assert b"data: first-event-is-long\n\n" in text
            assert b'"dropped":1' in text
            assert text.index(b"first-event") < text.index(b"dropped") < text.index(b"third")


async def test_frozen_subscriber_is_evicted_after_send_timeout(autojump_clock):
    hub = Hub()
    async with trio.open_nursery() as nursery:
        sink = MemorySink(room=0)
        scope_holder = {}

        async def connection(task_status=trio.TASK_STATUS_IGNORED):
            async with trio.open_nursery() as inner:
                subscriber = Subscriber(
                    sink=sink,
                    codec=SseCodec(),
                    nursery=inner,
                    cancel_scope=inner.cancel_scope,
                    position="",
                    max_events=4,
                    max_bytes=1 << 20,
                    send_timeout=30,
                )
                scope_holder["s"] = subscriber
                with hub.subscribe(subscriber, ["t"]):
                    task_status.started()
                    await trio.sleep_forever()

        await nursery.start(connection)
        start = trio.current_time()
        await trio.sleep(29)
        assert hub.statistics().subscribers == 1
        await trio.sleep(2)
        assert hub.statistics().subscribers == 0
        assert scope_holder["s"].end_reason == "evicted"
        assert hub.statistics().evicted == 1
        assert trio.current_time() - start < 32


async def test_heartbeats_only_on_silent_streams(autojump_clock):
    async with (
        open_hub(heartbeat_seconds=10, history_size=10) as hub,
        trio.open_nursery() as nursery,
    ):
        quiet, busy = MemorySink(), MemorySink()
        with (
            hub.subscribe(make_subscriber(nursery, quiet), ["q"]),
            hub.subscribe(make_subscriber(nursery, busy), ["b"]),
        ):
            for _ in range(10):
                await trio.sleep(2)
                hub.publish_nowait("b", "tick")
            assert quiet.written.count(b":\n") >= 3
            assert busy.written.count(b":\n") == 0


async def test_close_flushes_pending_then_the_shutdown_notice():
    hub = Hub(retry_ms=1000)
    async with trio.open_nursery() as nursery:
        sink = MemorySink()
        subscriber = make_subscriber(nursery, sink, max_events=100)
        with hub.subscribe(subscriber, ["t"]):
            sink.room = 0
            hub.publish_nowait("t", "pending")
            hub.close()
            assert not subscriber.ended
            hub.publish_nowait("t", "after close")  # not delivered any more
            sink.allow(1 << 20)
            await trio.testing.wait_all_tasks_blocked()
            assert subscriber.ended
            blocks = events_in(sink.written)
            assert b"data: pending" in blocks[1]
            assert b"broker.shutdown" in blocks[2]
            assert len(blocks) == 3


@pytest.mark.parametrize("resume", ["garbage", None])
async def test_subscribing_after_close_gets_the_shutdown_notice(resume):
    hub = Hub()
    hub.close()
    async with trio.open_nursery() as nursery:
        sink = MemorySink()
        subscriber = make_subscriber(nursery, sink)
        with hub.subscribe(subscriber, ["t"], resume_from=resume):
            assert b"broker.shutdown" in sink.written
            assert subscriber.ended
