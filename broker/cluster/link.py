"""One authenticated connection to a peer broker: handshake, reader, bounded writer.

A link owns two tasks in its own nursery: the reader decodes frames and hands them to the
node, the writer drains a bounded send queue in batches. Sending never blocks the caller:
when the queue is full the frame is dropped and counted, and anti-entropy sends what the
peer missed later, so a slow or dead peer never slows local publishing or delivery.

Errors: :class:`LinkClosed` when this side closed it, :class:`LinkBroken` when the peer went
away or sent garbage; both end the link, and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from . import auth, frames

log = logging.getLogger(__name__)

RECEIVE_BYTES = 65536


class LinkError(Exception):
    """Base class of peer link errors."""


class LinkClosed(LinkError):
    """This node closed the link."""


class LinkBroken(LinkError):
    """The peer went away, failed authentication, or sent something invalid."""


@dataclass(frozen=True, slots=True)
class Hello:
    node: str
    origin: str
    addr: str


async def handshake(
    stream: trio.abc.Stream,
    decoder: frames.FrameDecoder,
    own: Hello,
    secret: bytes,
    *,
    timeout: float,
) -> tuple[Hello, list[dict[str, Any]]]:
    """Exchange ``hello`` and ``auth`` frames; return the peer and any frames after them.

    Raises:
        LinkBroken: timeout, garbage, or a wrong secret.
    """
    nonce = auth.new_nonce()
    pending: list[dict[str, Any]] = []

    async def next_frame() -> dict[str, Any]:
        while not pending:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise LinkBroken(f"connection lost: {exc}") from None
            if not data:
                raise LinkBroken("connection closed during handshake")
            try:
                pending.extend(decoder.feed(data))
            except frames.FrameError as exc:
                raise LinkBroken(f"garbage during handshake: {exc}") from None
        return pending.pop(0)

    with trio.move_on_after(timeout) as timer:
        try:
            await stream.send_all(
                frames.encode(
                    {
                        "t": "hello",
                        "node": own.node,
                        "origin": own.origin,
                        "nonce": nonce,
                        "addr": own.addr,
                    }
                )
            )
            hello = await next_frame()
            if hello["t"] != "hello":
                raise LinkBroken(f"expected hello, got {hello['t']}")
            peer = Hello(hello["node"], hello["origin"], hello["addr"])
            await stream.send_all(
                frames.encode(
                    {"t": "auth", "mac": auth.prove(secret, hello["nonce"], nonce, own.node)}
                )
            )
            proof = await next_frame()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise LinkBroken(f"connection lost: {exc}") from None
        if proof["t"] != "auth" or not auth.verify(
            secret, nonce, hello["nonce"], peer.node, proof["mac"]
        ):
            raise LinkBroken(f"peer {peer.node} at {peer.addr} failed authentication")
        return peer, pending
    assert timer.cancelled_caught
    raise LinkBroken("handshake timed out")


class PeerLink:
    """An authenticated link to one peer.

    Args:
        stream: the connection (closed when the link ends).
        peer: who is on the other side.
        dialed: this node opened the connection.
        decoder: the frame decoder used in the handshake (it may hold buffered bytes).
        queue_frames: the send queue bound.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: Hello,
        *,
        dialed: bool,
        decoder: frames.FrameDecoder,
        queue_frames: int = 10_000,
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.dialed = dialed
        self.decoder = decoder
        self._send, self._receive = trio.open_memory_channel[bytes](queue_frames)
        self._cancel = trio.CancelScope()
        self.closed_by_us = False
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        #: Per origin, the highest seq queued on this link (anti-entropy bookkeeping).
        self.sent: dict[str, int] = {}
        #: The peer's vector in its last two heartbeats.
        self.peer_vector: dict[str, int] = {}
        self.previous_peer_vector: dict[str, int] = {}

    def __str__(self) -> str:
        return f"peer {self.peer.node}"

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    def send_nowait(self, frame: bytes) -> bool:
        """Queue a frame; ``False`` (and counted) if the queue is full or the link closed."""
        try:
            self._send.send_nowait(frame)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped += 1
            return False
        return True

    def close(self) -> None:
        """End the link (idempotent); :meth:`run` then raises :class:`LinkClosed`."""
        self.closed_by_us = True
        self._cancel.cancel()

    async def run(
        self, on_frame: Callable[[PeerLink, dict[str, Any]], None], first: list[dict[str, Any]]
    ) -> None:
        """Serve the link until it ends; the stream is closed on the way out.

        Raises:
            LinkClosed: :meth:`close` was called.
            LinkBroken: the peer went away or sent garbage.
        """
        failure: list[LinkBroken] = []
        try:
            with self._cancel:
                for frame in first:
                    self.frames_in += 1
                    on_frame(self, frame)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer_task, failure, nursery.cancel_scope)
                    await self._reader(on_frame, failure)
                    nursery.cancel_scope.cancel()
        finally:
            self._send.close()
            with trio.move_on_after(0.5, shield=True):
                await trio.aclose_forcefully(self.stream)
        if failure:
            raise failure[0]
        raise LinkClosed(str(self))

    async def _reader(
        self, on_frame: Callable[[PeerLink, dict[str, Any]], None], failure: list[LinkBroken]
    ) -> None:
        while True:
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                failure.append(LinkBroken(f"connection lost: {exc}"))
                return
            if not data:
                failure.append(LinkBroken("peer closed the connection"))
                return
            try:
                received = self.decoder.feed(data)
            except frames.FrameError as exc:
                failure.append(LinkBroken(f"peer sent garbage: {exc}"))
                return
            for frame in received:
                self.frames_in += 1
                if frame["t"] == "bye":
                    failure.append(LinkBroken("peer said goodbye"))
                    return
                on_frame(self, frame)

    async def _writer_task(self, failure: list[LinkBroken], scope: trio.CancelScope) -> None:
        receive = self._receive
        async for first in receive:
            batch = [first]
            while len(batch) < 512:
                try:
                    batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            try:
                await self.stream.send_all(b"".join(batch))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                failure.append(LinkBroken(f"connection lost: {exc}"))
                scope.cancel()
                return
            self.frames_out += len(batch)
