"""A subscriber's overflow queue: bounded by count and bytes, dropping the oldest (sans-IO).

Theory of operation. The hot path writes an event straight to an idle subscriber's socket
(see ``subscriber.py``); only what the kernel does not take lands here. While anything is
queued, newer events queue behind it, so per-subscriber order holds.

When a put would exceed ``max_events`` or ``max_bytes``, the *oldest* queued frames are
dropped (never the newest, and the publisher never waits). The drops are counted; the next
:meth:`Mailbox.take` reports the count so the writer can put a ``broker.dropped`` notice in
front of the batch. Because drops always come off the head of the queue, and the head is
always the event right after the last one handed to the kernel, every dropped event lies
between the subscriber's current position and the first frame of that batch: the notice
names exactly what was lost. Bytes already in the kernel, or a partly written frame, are
never in here and never dropped.

Replies share the budget. Per-connection frames that must never be dropped (a WebSocket's
acks, command errors, pongs) are held by the subscriber, not here, but they *reserve* room
in this mailbox (:meth:`Mailbox.reserve`) until the kernel has taken them: events make way
for them (dropped oldest first, as above), and a reservation that the bounds cannot hold
fails, so the subscriber closes the connection instead of holding more (issue 17: an ack
flood from a client that never reads grew the broker by 700 MB).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A snapshot of one mailbox.

    Attributes:
        depth: frames queued now.
        depth_bytes: bytes queued now.
        peak: the largest depth seen.
        dropped: frames dropped since the mailbox was made.
    """

    depth: int
    depth_bytes: int
    peak: int
    dropped: int


class Mailbox:
    """Pending frames of one subscriber, with their event ids.

    Args:
        max_events: most frames held; at least 1.
        max_bytes: most bytes held; one frame larger than this is still held alone.
    """

    __slots__ = (
        "_dropped_since",
        "_frames",
        "_unreported",
        "bytes",
        "dropped",
        "max_bytes",
        "max_events",
        "peak",
        "reserved_bytes",
        "reserved_frames",
    )

    def __init__(self, *, max_events: int, max_bytes: int) -> None:
        self.max_events = max(1, max_events)
        self.max_bytes = max_bytes
        # Most subscribers never queue: the deque (~0.7 KiB) is made on first use.
        self._frames: deque[tuple[bytes, str, float]] | tuple[()] = ()
        self.bytes = 0
        self.peak = 0
        self.dropped = 0
        self._unreported = 0
        self.reserved_bytes = 0
        self.reserved_frames = 0
        #: When the oldest frame dropped since the last take was queued (for the lag).
        self._dropped_since: float | None = None

    def __len__(self) -> int:
        return len(self._frames)

    def put_nowait(self, frame: bytes, event_id: str, queued_at: float = 0.0) -> None:
        """Queue a frame; drop the oldest ones if the bounds are exceeded. Never blocks."""
        frames = self._frames
        if not isinstance(frames, deque):
            frames = self._frames = deque()
        frames.append((frame, event_id, queued_at))
        self.bytes += len(frame)
        if (
            len(frames) + self.reserved_frames > self.max_events
            or self.bytes + self.reserved_bytes > self.max_bytes
        ):
            self._make_room(1)
        if len(frames) > self.peak:
            self.peak = len(frames)

    def _make_room(self, keep: int) -> None:
        """Drop the oldest frames (keeping at least ``keep``) until the bounds hold."""
        frames = self._frames
        while len(frames) > keep and (
            len(frames) + self.reserved_frames > self.max_events
            or self.bytes + self.reserved_bytes > self.max_bytes
        ):
            assert isinstance(frames, deque)
            old, _, old_at = frames.popleft()
            self.bytes -= len(old)
            self.dropped += 1
            if not self._unreported:
                self._dropped_since = old_at
            self._unreported += 1

    def reserve(self, size: int) -> bool:
        """Reserve room for one never-dropped frame of ``size`` bytes held elsewhere.

        Queued events are dropped (oldest first) to make room. Returns ``False``, reserving
        nothing, when the reservations alone would pass a bound.
        """
        if (
            self.reserved_bytes + size > self.max_bytes
            or self.reserved_frames + 1 > self.max_events
        ):
            return False
        self.reserved_bytes += size
        self.reserved_frames += 1
        self._make_room(0)
        return True

    def release(self, size: int, count: int) -> None:
        """Give back the room of ``count`` reserved frames (``size`` bytes) once written."""
        self.reserved_bytes -= size
        self.reserved_frames -= count

    def oldest(self) -> float | None:
        """When the oldest queued frame was queued (``None`` if empty)."""
        return self._frames[0][2] if self._frames else None

    def waiting_since(self) -> float | None:
        """When the oldest event the client has neither received nor been told it lost was
        queued: the oldest dropped since the last take, else the oldest queued (``None``:
        nothing waits). A client that stopped reading keeps this time while drops go on."""
        if self._dropped_since is not None:
            return self._dropped_since
        return self._frames[0][2] if self._frames else None

    def take(self, max_bytes: int) -> tuple[list[bytes], str | None, int]:
        """Remove the oldest frames, up to about ``max_bytes`` (at least one).

        Returns:
            ``(frames, last_id, dropped)``: the frames, the event id of the last one
            (``None`` if empty), and how many frames were dropped since the last take.
        """
        frames = self._frames
        taken: list[bytes] = []
        self._dropped_since = None
        if not frames:
            dropped, self._unreported = self._unreported, 0
            return taken, None, dropped
        assert isinstance(frames, deque)
        last_id: str | None = None
        size = 0
        while frames and (not taken or size + len(frames[0][0]) <= max_bytes):
            frame, last_id, _ = frames.popleft()
            taken.append(frame)
            size += len(frame)
        if not frames:
            self._frames = ()
        self.bytes -= size
        dropped, self._unreported = self._unreported, 0
        return taken, last_id, dropped

    def clear(self) -> None:
        """Forget everything queued (the connection is gone)."""
        self._frames = ()
        self.bytes = 0
        self.reserved_bytes = 0
        self.reserved_frames = 0
        self._dropped_since = None

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(len(self._frames), self.bytes, self.peak, self.dropped)
