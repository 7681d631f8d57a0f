"""One subscriber's delivery: write-through to the socket, overflow to its mailbox.

Theory of operation (measured in shared/PERF.md). Waking a Trio task costs more than
the ``send()`` itself, so the hub's publish calls :meth:`Subscriber.offer`, which, when the
subscriber has nothing pending, writes the shared frame straight to the socket without a
checkpoint and without waking anyone. Only when the kernel pushes back (a partial write,
``EAGAIN``) does the subscriber queue the rest and start its writer task in the
connection's nursery; that task waits until the socket is writable, writes everything
pending in one call, and exits when the queue is empty, after which direct writes resume.
Order per subscriber is kept because nothing is written directly while anything is queued.

Lifetime. A subscriber belongs to one connection task, which owns the nursery the writer
runs in and the cancel scope :meth:`end` cancels. The connection ends when the client goes
away, when a write fails, when the client falls behind for ``send_timeout`` seconds
(evicted, so a frozen client never holds memory or a writer), or after the final
``broker.shutdown`` notice was flushed.

Eviction is on progress, not on "any byte written": the writer runs only while something
is pending, and it judges the client at the end of each ``send_timeout`` window of that
run. A client that took no bytes in a window is evicted (frozen). From the second window
on, a client that took fewer bytes than were queued for it meanwhile is evicted if it also
lost events to drop-oldest or its pending bytes did not shrink since the last judgment: it
drains slower than it is fed. A client that drains its queue ends the writer (and so the
windows); one that works through a burst or a backlog shows it shrinking. A client that
reads a few bytes now and then while the broker feeds it more is therefore evicted within
two windows (issue 17).

Replies are bounded: :meth:`send_control` frames (acks, errors, pongs) are never dropped,
but they reserve room in the mailbox's budget until written (``mailbox.py``); when the
budget cannot hold one more, :meth:`send_control` returns ``False`` and the connection
closes the stream with :meth:`abort`.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import time
from collections import deque
from typing import Any, Final, Protocol

import trio

from .events import Event
from .latency import LatencyHistogram
from .mailbox import Mailbox

log = logging.getLogger(__name__)

#: Most bytes joined into one write by the writer; the rest stays droppable in the mailbox.
BATCH_BYTES: Final = 64 * 1024

#: Linux ``struct tcp_info``: the offset of ``tcpi_bytes_acked`` (u64, since 4.1) and a size
#: that reaches past it.
_TCP_INFO_BYTES_ACKED: Final = 120
_TCP_INFO_BYTES: Final = 232

#: Connection ids, unique in this process (the admin API names connections by them).
_ids = itertools.count(1)


class SinkBroken(Exception):
    """The transport under a sink failed; the subscriber is over."""


class Sink(Protocol):
    """Where a subscriber's bytes go (a socket, or an ASGI ``send``)."""

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Write what the transport takes now without blocking; return the count."""
        ...

    async def send(self, data: bytes | memoryview) -> int:
        """Wait until some of ``data`` can be written, write it, return the count."""
        ...


class Codec(Protocol):
    """Turns events and notices into one transport's frames."""

    @property
    def heartbeat(self) -> bytes: ...

    @property
    def goodbye(self) -> bytes: ...

    @property
    def ended(self) -> bytes: ...

    @property
    def expired(self) -> bytes:
        """Written after ``broker.auth_expired`` (WebSocket: a close frame)."""
        ...

    def frame(self, event: Event) -> bytes: ...

    def notice(
        self,
        event_type: str,
        event_id: str | None,
        payload: dict[str, Any],
        retry_ms: int | None = None,
    ) -> bytes: ...


class SocketSink:
    """Non-blocking writes straight to a connected socket's file descriptor."""

    __slots__ = ("_fd", "_sock")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._fd = sock.fileno()

    def send_nowait(self, data: bytes | memoryview) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise SinkBroken(str(exc)) from None

    def bytes_acked(self) -> int | None:
        """Bytes the peer acknowledged (Linux ``TCP_INFO``), or ``None`` where unavailable."""
        try:
            info = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
        except (OSError, AttributeError):  # not Linux, not TCP, or closed
            return None
        if len(info) < _TCP_INFO_BYTES_ACKED + 8:
            return None
        return int(struct.unpack_from("=Q", info, _TCP_INFO_BYTES_ACKED)[0])

    async def send(self, data: bytes | memoryview) -> int:
        while True:
            await trio.lowlevel.wait_writable(self._sock)
            sent = self.send_nowait(data)
            if sent:
                return sent


class Subscriber:
    """The delivery state of one subscriber connection.

    Args:
        sink: where bytes go.
        codec: how events and notices are framed for this client.
        nursery: the stream's nursery, where the writer task runs while needed; :meth:`end`
            cancels it to finish the stream.
        position: the id the client's stream is at (its start position).
        max_events, max_bytes: the mailbox bounds.
        send_timeout: seconds a client may fall behind (take fewer bytes than it is fed,
            or none) before it is evicted.
        name: for log lines (peer address).
        latency: where queued deliveries record how long they waited.
        cancel_scope: what :meth:`end` cancels instead of the nursery's own scope (tests
            that drive a subscriber without a connection).
        transport: ``sse``, ``ws`` or ``h2`` (the admin API shows it).
        remote: the client's address, ``host:port`` (the admin API shows it).
        subject: the token's subject, if any (the admin API shows it).
    """

    __slots__ = (
        "_backlog",
        "_cancel_scope",
        "_close_reason",
        "_control",
        "_control_bytes",
        "_corked",
        "_fed",
        "_final",
        "_nursery",
        "_tail",
        "busy",
        "codec",
        "delivered",
        "end_reason",
        "ended",
        "frame",
        "id",
        "latency",
        "mailbox",
        "name",
        "opened_at",
        "position",
        "remote",
        "seen_writes",
        "send_timeout",
        "sink",
        "subject",
        "topics",
        "transport",
    )

    def __init__(
        self,
        *,
        sink: Sink,
        codec: Codec,
        nursery: trio.Nursery,
        position: str,
        max_events: int,
        max_bytes: int,
        send_timeout: float,
        name: str = "subscriber",
        latency: LatencyHistogram | None = None,
        cancel_scope: trio.CancelScope | None = None,
        transport: str = "sse",
        remote: str = "?",
        subject: str | None = None,
    ) -> None:
        self.id = next(_ids)
        self.transport = transport
        self.remote = remote
        self.subject = subject
        self.opened_at = time.time()  # wall clock: shown as data, never used for timing
        self.latency = latency
        self.sink = sink
        self.codec = codec
        self.frame = codec.frame
        self.mailbox = Mailbox(max_events=max_events, max_bytes=max_bytes)
        self._nursery = nursery
        self._cancel_scope = nursery.cancel_scope if cancel_scope is None else cancel_scope
        self.position = position
        self.send_timeout = send_timeout
        self.name = name
        self.topics: frozenset[str] = frozenset()
        self.busy = False
        self._tail: bytes | memoryview = b""
        self._final: bytes | None = None
        self._backlog: deque[Event] | tuple[()] = ()  # made on first replay
        self._control: list[bytes] = []
        #: Reserved (bytes, frames) of control frames handed to the writer, not yet written.
        self._control_bytes = (0, 0)
        #: Bytes queued while busy (mailbox, notices, control), for the progress check.
        self._fed = 0
        self._close_reason = "closed"
        self._corked: list[bytes] | None = None
        self.delivered = 0
        self.seen_writes = 0
        self.ended = False
        self.end_reason = ""

    def __str__(self) -> str:
        return self.name

    # -- called synchronously by the hub (no checkpoints) -------------------------------

    def offer(self, event: Event) -> None:
        """Deliver one event: write it now if idle, else queue it (drop-oldest)."""
        if self.busy:
            if self._final is None:
                frame = self.frame(event)
                self._fed += len(frame)
                self.mailbox.put_nowait(frame, event.id, trio.current_time())
            return
        if self.ended or self._final is not None:
            return
        frame = self.frame(event)
        self.position = event.id
        self.delivered += 1
        self._write_through(frame)

    def offer_notice(self, frame: bytes, event_id: str) -> None:
        """Deliver a notice that sets the stream position (``broker.start``/``reset``)."""
        if self.busy:
            self._fed += len(frame)
            self.mailbox.put_nowait(frame, event_id, trio.current_time())
        elif not self.ended:
            self.position = event_id
            self._write_through(frame)

    def send_control(self, frame: bytes) -> bool:
        """Send a per-connection frame that is never dropped (pong, ack, error).

        It goes out right after any partly written frame, ahead of queued events, so it
        never splits a frame on the wire. While the client is behind, it is held against
        the mailbox's budget (queued events make way for it).

        Returns:
            ``False`` if the budget cannot hold it (nothing was queued): the caller should
            :meth:`abort` the stream. ``True`` otherwise (also once the stream has ended).
        """
        if self.ended or self._final is not None:
            return True
        if self.busy:
            if not self.mailbox.reserve(len(frame)):
                return False
            self._fed += len(frame)
            self._control.append(frame)
        else:
            self._write_through(frame)
        return True

    def abort(self, final_frame: bytes, reason: str) -> None:
        """Close now: discard what is pending, then send ``final_frame`` and end.

        Only a partly written frame is finished first (the wire must stay framed). For a
        client over its budget: nothing more is held for it, and it still learns why.
        """
        if self.ended or self._final is not None:
            return
        self._corked = None
        self._control.clear()
        self._backlog = ()
        self.mailbox.clear()
        self._control_bytes = (0, 0)
        self.close(final_frame, reason)

    def replay(self, events: list[Event]) -> None:
        """Deliver events from history ahead of everything offered later.

        The writer pulls them from history in batches, so a long replay neither passes
        through the bounded mailbox nor drops anything; live events that arrive meanwhile
        queue behind it.
        """
        if not events or self.ended:
            return
        if isinstance(self._backlog, deque):
            self._backlog.extend(events)
        else:
            self._backlog = deque(events)
        if not self.busy:
            self.busy = True
            self._nursery.start_soon(self._writer_task)

    def offer_heartbeat(self) -> None:
        """Write a heartbeat if the connection was silent since the last call.

        A subscriber with pending data gets none: its writer is already at work, and the
        send timeout evicts it if the client has stopped reading.
        """
        if self.delivered != self.seen_writes or self.busy or self.ended:
            self.seen_writes = self.delivered
            return
        self._write_through(self.codec.heartbeat)

    def cork(self) -> None:
        """Hold direct writes until :meth:`uncork`, which writes them as one (a batch)."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        """Write what was held since :meth:`cork` in one call."""
        frames, self._corked = self._corked, None
        if not frames or self.ended:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if self.busy:
            # A replay started the writer meanwhile (nothing was written yet: no checkpoint
            # since cork): the held frames go first, as its tail.
            assert not self._tail
            self._tail = data
        else:
            self._write_through(data)

    def close(self, final_frame: bytes | None, reason: str = "closed") -> None:
        """Finish the stream: flush what is pending, then ``final_frame``, then end.

        ``reason`` is the :attr:`end_reason` once it has ended so (for the close log line).
        """
        if self.ended or self._final is not None:
            return
        self._close_reason = reason
        self.uncork()
        if final_frame is None:
            self.end(reason)
            return
        if self.busy:
            self._final = final_frame
            return
        self._final = b""  # in flight: the stream ends once it is written
        self._write_through(final_frame)
        if not self.busy:
            self.end(reason)

    @property
    def closing(self) -> bool:
        """A final frame is being flushed; the connection ends once it is written."""
        return self._final is not None and not self.ended

    def disconnect(self, final_frame: bytes, grace_seconds: float) -> None:
        """End the stream on an operator's request, telling the client why first.

        What is queued is discarded (a stalled client would never take it); ``final_frame``
        follows any partly written frame, and the connection ends once it is written or
        after ``grace_seconds``, whichever comes first. The end reason is ``disconnected``.
        """
        if self.ended:
            return
        self._close_reason = "disconnected"
        self.mailbox.clear()
        self._backlog = ()
        if self._final is None:
            self.close(final_frame)
        if not self.ended:
            self._nursery.start_soon(self._deadline_task, grace_seconds)

    def bytes_out(self) -> int | None:
        """Bytes the client has taken, from the kernel (``None`` where the sink cannot say).

        Read when asked (admin API), so delivery counts nothing per write.
        """
        acked = getattr(self.sink, "bytes_acked", None)
        return acked() if acked is not None else None

    def lag(self, now: float) -> float:
        """Age of the oldest event not yet delivered (nor reported lost); 0 when none waits.

        Events dropped from a full queue still count until the drop notice is written, so a
        client that stopped reading shows how long ago it stopped, not the queue's span.
        """
        since = self.mailbox.waiting_since()
        return 0.0 if since is None else max(0.0, now - since)

    def end(self, reason: str) -> None:
        """End the connection now (idempotent); pending frames are discarded."""
        if self.ended:
            return
        self.ended = True
        self.end_reason = reason
        self.mailbox.clear()
        self._cancel_scope.cancel()

    # -- internals ----------------------------------------------------------------------

    def _write_through(self, frame: bytes) -> None:
        if self._corked is not None:
            self._corked.append(frame)
            return
        try:
            sent = self.sink.send_nowait(frame)
        except SinkBroken:
            self.end("gone")
            return
        if sent < len(frame):
            self._tail = memoryview(frame)[sent:]
            self.busy = True
            self._nursery.start_soon(self._writer_task)

    async def _writer_task(self) -> None:
        """Flush the tail and the mailbox while the kernel pushes back; then exit.

        Judges progress once per ``send_timeout`` window (see the module docstring).
        """
        mailbox = self.mailbox
        window_end = trio.current_time() + self.send_timeout
        fed_before, dropped_before, drained = self._fed, mailbox.dropped, 0
        pending_before: int | None = None  # none before the first judgment
        try:
            while not self.ended:
                data = self._tail
                if not data and self._control:
                    data = self._take_control()
                if not data and self._backlog:
                    data = self._take_backlog()
                if not data:
                    oldest = mailbox.oldest()
                    frames, last_id, dropped = mailbox.take(BATCH_BYTES)
                    if oldest is not None and self.latency is not None:
                        self.latency.observe(trio.current_time() - oldest, len(frames))
                    if dropped:
                        frames.insert(0, self._dropped_notice(dropped))
                    if last_id is not None:
                        self.position = last_id
                        self.delivered += len(frames) - (1 if dropped else 0)
                    if not frames:
                        if self._final is None:
                            return
                        frames = [self._final]
                        self._final = b""  # written below; the stream ends after it
                    data = frames[0] if len(frames) == 1 else b"".join(frames)
                sent = 0
                with trio.move_on_at(window_end):
                    sent = await self.sink.send(data)
                drained += sent
                self._tail = memoryview(data)[sent:] if sent < len(data) else b""
                if not self._tail and self._control_bytes[1]:
                    mailbox.release(*self._control_bytes)
                    self._control_bytes = (0, 0)
                if not self._tail and self._final == b"" and not len(mailbox):
                    self.end(self._close_reason)
                    return
                now = trio.current_time()
                if now >= window_end:
                    fed = self._fed - fed_before
                    pending = len(self._tail) + mailbox.bytes + mailbox.reserved_bytes
                    behind = pending_before is not None and (
                        drained < fed
                        and (mailbox.dropped > dropped_before or pending >= pending_before)
                    )
                    if drained == 0 or behind:
                        log.info(
                            "%s: evicted, took %d bytes in %.1f s while %d were queued for it",
                            self,
                            drained,
                            self.send_timeout,
                            fed,
                        )
                        self.end("evicted")
                        return
                    window_end = now + self.send_timeout
                    fed_before, dropped_before, drained = self._fed, mailbox.dropped, 0
                    pending_before = pending
        except SinkBroken:
            self.end("gone")
        finally:
            self.busy = False

    def _take_control(self) -> bytes:
        """The oldest control frames, up to about ``BATCH_BYTES`` (at least one).

        Batched like the mailbox, so :meth:`abort` finds the rest unwritten and drops it.
        """
        control = self._control
        count, size = 0, 0
        while count < len(control) and (not count or size + len(control[count]) <= BATCH_BYTES):
            size += len(control[count])
            count += 1
        data = control[0] if count == 1 else b"".join(control[:count])
        del control[:count]
        self._control_bytes = (size, count)
        return data

    async def _deadline_task(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.end(self._close_reason)

    def _take_backlog(self) -> bytes:
        backlog, frame = self._backlog, self.frame
        assert isinstance(backlog, deque)
        frames: list[bytes] = []
        size = 0
        while backlog and (not frames or size < BATCH_BYTES):
            event = backlog.popleft()
            frames.append(frame(event))
            size += len(frames[-1])
            self.position = event.id
        if not backlog:
            self._backlog = ()
        self.delivered += len(frames)
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _dropped_notice(self, dropped: int) -> bytes:
        return self.codec.notice(
            "broker.dropped",
            self.position,
            {"dropped": dropped, "resume_from": self.position},
        )
