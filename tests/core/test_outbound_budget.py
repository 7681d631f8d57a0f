"""A subscriber's outbound budget without sockets: replies share it, eviction on progress.

Issue 17: an ack flood from a client that never reads grew the broker by 700 MB, and a
client that reads a few bytes now and then was never evicted.
"""

from functools import partial

import trio

from broker.hub import Hub
from broker.hub.subscriber import Subscriber
from broker.wire.websocket import WsCodec
from tests.core.test_hub import MemorySink


def make(nursery, sink, **options):
    defaults = dict(position="", max_events=64, max_bytes=4096, send_timeout=1.0)
    defaults.update(options)
    return Subscriber(
        sink=sink,
        codec=WsCodec(binary=False),
        nursery=nursery,
        cancel_scope=nursery.cancel_scope,
        **defaults,
    )


async def serve(hub, sink, box, **options):
    """One connection: a subscriber on topic ``t`` until it ends."""
    async with trio.open_nursery() as nursery:
        subscriber = make(nursery, sink, **options)
        box.append(subscriber)
        with hub.subscribe(subscriber, ["t"]):
            await trio.sleep_forever()


async def test_a_trickle_reader_fed_faster_is_evicted(autojump_clock):
    """Reading 20 bytes every 0.1 s never stalls a whole send_timeout, yet it falls behind."""
    hub = Hub()
    sink = MemorySink(room=0)
    box = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, hub, sink, box)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()

            async def feed_and_trickle():
                while hub.statistics().subscribers:
                    hub.publish_nowait("t", "x" * 500)
                    sink.allow(20)
                    await trio.sleep(0.1)

            nursery.start_soon(feed_and_trickle)
            while hub.statistics().subscribers:
                await trio.sleep(0.05)
    assert box[0].end_reason == "evicted"
    assert trio.current_time() - start <= 2 * 1.0 + 0.2  # within two windows


async def test_a_reader_that_catches_up_slowly_is_kept(autojump_clock):
    """A backlog drained slower than send_timeout is fine while nothing more comes."""
    hub = Hub()
    sink = MemorySink(room=0)
    box = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, hub, sink, box)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(8):
                hub.publish_nowait("t", "y" * 400)
            start = trio.current_time()
            while box[0].busy and not box[0].ended:
                sink.allow(100)  # 1 kB/s: the backlog takes several windows
                await trio.sleep(0.1)
            assert trio.current_time() - start > 3 * 1.0
            assert not box[0].ended  # drained: the writer is gone, the stream goes on
            assert box[0].mailbox.dropped == 0
            nursery.cancel_scope.cancel()


async def test_replies_over_the_budget_are_refused_and_abort_ends_the_stream(autojump_clock):
    hub = Hub()
    sink = MemorySink(room=0)
    box = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(serve, hub, sink, box, send_timeout=30.0))
            await trio.testing.wait_all_tasks_blocked()
            subscriber = box[0]
            hub.publish_nowait("t", "z" * 100)  # the kernel takes nothing: now busy
            assert subscriber.busy
            for _ in range(3):
                hub.publish_nowait("t", "z" * 100)
            reply = b"r" * 1000
            accepted = 0
            while subscriber.send_control(reply):
                accepted += 1
                assert accepted < 100
            assert accepted == 4  # 4096-byte budget
            assert subscriber.mailbox.reserved_bytes <= 4096
            assert subscriber.mailbox.statistics().depth <= 1  # events made way
            subscriber.abort(b"BYE", "over_budget")
            assert subscriber.mailbox.statistics().depth_bytes == 0
            sink.allow(1 << 20)
            await trio.testing.wait_all_tasks_blocked()
    assert subscriber.end_reason == "over_budget"
    assert bytes(sink.written).endswith(b"BYE")
    assert reply not in bytes(sink.written)  # the unread replies were discarded
    assert hub.statistics().subscribers == 0
