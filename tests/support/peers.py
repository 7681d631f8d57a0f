"""Talking to a real node's peer port as a stranger would: raw frames over real sockets."""

from __future__ import annotations

from typing import Any

import trio

from broker.cluster import frames
from broker.server import RunningServer


def peer_endpoint(server: RunningServer) -> tuple[str, int]:
    assert server.cluster is not None
    host, _, port = server.cluster.addr.rpartition(":")
    return host, int(port)


async def next_frame(stream: trio.abc.Stream, decoder: frames.FrameDecoder) -> dict[str, Any]:
    """The next frame from the node (EOFError if it closes first)."""
    while (frame := decoder.next_frame()) is None:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError("the node closed the connection")
        decoder.add(data)
    return frame


async def frames_until_closed(
    stream: trio.abc.Stream, decoder: frames.FrameDecoder | None = None
) -> list[dict[str, Any]]:
    """Every frame the node sends until it closes the connection."""
    decoder = decoder or frames.FrameDecoder()
    received = []
    try:
        while True:
            received.append(await next_frame(stream, decoder))
    except (EOFError, trio.BrokenResourceError):
        pass
    return received


def hello(node: str, nonce: bytes, origin: str = "zzzzzz", addr: str = "") -> bytes:
    return frames.encode(
        {"t": "hello", "node": node, "origin": origin, "nonce": nonce, "addr": addr}
    )


def event(topic: str, data: str, origin: str = "zzzzzz", seq: int = 1) -> bytes:
    return frames.encode_event(
        origin=origin,
        seq=seq,
        topic=topic,
        event_type=None,
        data=data,
        is_json=False,
        published_at=0.0,
        retain=False,
        final=False,
    )
