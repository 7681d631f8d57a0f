"""One authenticated connection to a peer broker: handshake, reader, bounded writer.

A link owns two tasks in its own nursery: the reader decodes frames and hands them to the
node, the writer drains a bounded send queue in batches. Sending never blocks the caller:
when the queue is full the frame is dropped and counted, and the peer pulls what it missed
later (``catchup.py``), so a slow or dead peer never slows local publishing or delivery.

Errors: :class:`LinkClosed` when this side closed it, :class:`LinkBroken` when the peer went
away or sent garbage; both end the link, and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from . import auth, frames
from .auth import Hello as Hello

log = logging.getLogger(__name__)

RECEIVE_BYTES = 65536


class LinkError(Exception):
    """Base class of peer link errors."""


class LinkClosed(LinkError):
    """This node closed the link."""


class LinkBroken(LinkError):
    """The peer went away, failed authentication, or sent something invalid."""


async def handshake(
    stream: trio.abc.Stream,
    decoder: frames.FrameDecoder,
    own: Hello,
    secret: bytes,
    *,
    dialer: bool,
    timeout: float,
) -> tuple[Hello, list[dict[str, Any]]]:
    """Run the peer handshake (``auth.Handshake``) on ``stream``; return the proven peer.

    Until the peer is proven, frames over ``auth.MAX_FRAME_BYTES`` are refused; then the
    decoder's own limit applies again.

    Args:
        dialer: this node opened the connection (the role is bound into every MAC).
        timeout: the whole handshake must finish within this many seconds.

    Returns:
        The peer, and any frames it sent after its proof (to be handled first).

    Raises:
        LinkBroken: timeout, garbage, a protocol violation, or a wrong secret.
    """
    machine = auth.Handshake(secret, own, dialer=dialer)
    limit = decoder.max_frame_bytes
    decoder.max_frame_bytes = min(limit, auth.MAX_FRAME_BYTES)

    async def send(out: list[dict[str, Any]]) -> None:
        if out:
            await stream.send_all(b"".join(frames.encode(frame) for frame in out))

    async def next_frame() -> dict[str, Any]:
        while (frame := decoder.next_frame()) is None:
            data = await stream.receive_some(auth.MAX_FRAME_BYTES)
            if not data:
                raise LinkBroken("connection closed during handshake")
            decoder.add(data)
        return frame

    with trio.move_on_after(timeout) as timer:
        try:
            await send(machine.start())
            while machine.peer is None:
                await send(machine.receive(await next_frame()))
            decoder.max_frame_bytes = limit
            first = decoder.feed(b"")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise LinkBroken(f"connection lost: {exc.__cause__ or exc}") from None
        except frames.FrameError as exc:
            raise LinkBroken(f"garbage during handshake: {exc}") from None
        except auth.HandshakeFailed as exc:
            raise LinkBroken(str(exc)) from None
        return machine.peer, first
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
        #: Set once the writer has ended: its queue written out, or the link broken.
        self._flushed = trio.Event()
        self.closed_by_us = False
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        #: The peer's vector in its last heartbeat (its lag in ``/stats``).
        self.peer_vector: dict[str, int] = {}

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

    def finish(self, frame: bytes) -> None:
        """Queue ``frame`` as the last one: the writer sends what is queued, then ends."""
        self.send_nowait(frame)
        self._send.close()

    async def wait_flushed(self) -> None:
        """Return once the writer has written everything queued (or the link broke)."""
        await self._flushed.wait()

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
            self._flushed.set()
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
        try:
            await self._write_all(failure, scope)
        finally:
            self._flushed.set()

    async def _write_all(self, failure: list[LinkBroken], scope: trio.CancelScope) -> None:
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
