"""A peer link without sockets: its goodbye is written after everything it had queued."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from broker.cluster import frames
from broker.cluster.link import Hello, LinkClosed, PeerLink


async def test_finish_writes_the_queue_then_bye_and_wait_flushed_returns():
    ours, theirs = trio.testing.memory_stream_pair()
    link = PeerLink(ours, Hello("b", "o", "b:1"), dialed=True, decoder=frames.FrameDecoder())
    got: list[dict] = []

    async def run_link() -> None:
        with pytest.raises(LinkClosed):
            await link.run(lambda _link, _frame: None, [])

    async def read_peer() -> None:
        decoder = frames.FrameDecoder()
        while not got or got[-1]["t"] != "bye":
            got.extend(decoder.feed(await theirs.receive_some(65536)))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_link)
            nursery.start_soon(read_peer)
            for n in range(100):
                assert link.send_nowait(frames.encode({"t": "ack", "o": "o", "s": n + 1}))
            link.finish(frames.encode({"t": "bye"}))
            await link.wait_flushed()
            # nothing is sent after the goodbye
            assert not link.send_nowait(frames.encode({"t": "ack", "o": "o", "s": 101}))
            link.close()
    assert [f["s"] for f in got[:-1]] == list(range(1, 101))
    assert got[-1] == {"t": "bye"}


async def test_wait_flushed_returns_when_the_link_breaks_instead():
    ours, theirs = trio.testing.memory_stream_pair()
    link = PeerLink(ours, Hello("b", "o", "b:1"), dialed=True, decoder=frames.FrameDecoder())
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def run_link() -> None:
                with pytest.raises(Exception):  # noqa: B017 - LinkBroken: peer went away
                    await link.run(lambda _link, _frame: None, [])

            nursery.start_soon(run_link)
            await trio.testing.wait_all_tasks_blocked()
            await theirs.aclose()
            await link.wait_flushed()
