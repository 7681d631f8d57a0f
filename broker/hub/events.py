"""The event record: created once at publish, carrying its wire forms (sans-IO).

An :class:`Event` is immutable by convention once the hub has given it an id. Its SSE
frame is built at once (every subscriber on this node shares that one ``bytes`` object);
the other wire forms (the JSON envelope used by ``envelope=1`` SSE and WebSocket text
frames, msgpack frames) are built the first time a subscriber needs them and then shared
the same way.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

import msgpack

from ..wire import sse, websocket

#: Take an object out of the cyclic garbage collector's lists (CPython's C API; calling it
#: twice is allowed, and the object's own deallocation calls it too).
_untrack = ctypes.pythonapi.PyObject_GC_UnTrack
_untrack.argtypes = [ctypes.py_object]
_untrack.restype = None


def uncollected(event: Event) -> Event:
    """``event``, left out of the cyclic garbage collector's walks from now on.

    An event refers only to strings, bytes, numbers and None, so it can never be part of
    a reference cycle: the collector has nothing to find in it (CPython untracks tuples
    and dicts of such values for the same reason), and reference counting still frees
    it. For the events the store reads back into topics' histories (100 000 at once when
    2000 streams resume), which every collection then walked: 50-95 ms passes, all of it
    a stall of the loop (``python -m load.durable --stall``). Not on the publish path:
    the call costs 0.2-0.4 µs, 5 % of a single POST's CPU in the memory engine, and
    untracking committed events too cost 2.5 % of a durable POST for passes of 4-9 ms
    instead of 11-26 ms.
    """
    _untrack(event)
    return event


class Event:
    """One published event as this node delivers it.

    Attributes:
        topic: the topic it was published to.
        event_type: the SSE ``event:`` type, or ``None`` for untyped events.
        data: the payload as text: the publisher's text, or JSON text when ``is_json``.
        is_json: whether ``data`` is JSON (from a JSON or msgpack body).
        origin: the origin token of the node that accepted it.
        seq: its sequence number within that origin.
        index: its place in this node's delivery order (merges per-topic histories).
        id: the node's position vector right after it, as an opaque event id.
        published_at: wall-clock publish time at the origin, seconds since the epoch.
        retain: it is (was published as) its topic's current state for its type.
        final: it closed its topic.
        sse: the complete SSE frame.
    """

    __slots__ = (
        "_envelope",
        "_msgpack",
        "_sse_envelope",
        "_ws_binary",
        "_ws_text",
        "data",
        "event_type",
        "final",
        "id",
        "index",
        "is_json",
        "origin",
        "published_at",
        "retain",
        "seq",
        "sse",
        "topic",
    )

    def __init__(
        self,
        *,
        topic: str,
        event_type: str | None,
        data: str,
        is_json: bool,
        origin: str,
        seq: int,
        index: int,
        event_id: str,
        published_at: float,
        retain: bool = False,
        final: bool = False,
    ) -> None:
        self.topic = topic
        self.event_type = event_type
        self.data = data
        self.is_json = is_json
        self.origin = origin
        self.seq = seq
        self.index = index
        self.id = event_id
        self.published_at = published_at
        self.retain = retain
        self.final = final
        self.sse = sse.encode_frame(event_id, event_type, data)
        self._envelope: str | None = None
        self._sse_envelope: bytes | None = None
        self._msgpack: bytes | None = None
        self._ws_text: bytes | None = None
        self._ws_binary: bytes | None = None

    def __repr__(self) -> str:
        return f"<Event {self.topic} {self.id} {self.event_type or ''}>"

    def with_id(self, event_id: str) -> Event:
        """A copy carrying another id (retained state sent at a stream's start position)."""
        return Event(
            topic=self.topic,
            event_type=self.event_type,
            data=self.data,
            is_json=self.is_json,
            origin=self.origin,
            seq=self.seq,
            index=self.index,
            event_id=event_id,
            published_at=self.published_at,
            retain=self.retain,
            final=self.final,
        )

    def value(self) -> Any:
        """The payload as a Python value (JSON decoded, or the text)."""
        return json.loads(self.data) if self.is_json else self.data

    def envelope(self) -> str:
        """``{"id","topic","event","data"}`` as JSON text (shared by SSE envelope and WS)."""
        text = self._envelope
        if text is None:
            data_json = self.data if self.is_json else json.dumps(self.data, ensure_ascii=False)
            text = self._envelope = sse.envelope_json(
                self.id, self.topic, self.event_type, data_json
            )
        return text

    def sse_envelope(self) -> bytes:
        """The SSE frame of ``envelope=1`` streams.

        The type lives inside the envelope, so no ``event:`` line is sent and a browser's
        ``onmessage`` sees every event whatever its type.
        """
        frame = self._sse_envelope
        if frame is None:
            frame = self._sse_envelope = sse.encode_frame(self.id, None, self.envelope())
        return frame

    def msgpack(self) -> bytes:
        """The envelope as msgpack (WebSocket binary frames)."""
        packed = self._msgpack
        if packed is None:
            packed = self._msgpack = msgpack.packb(
                {
                    "id": self.id,
                    "topic": self.topic,
                    "event": self.event_type,
                    "data": self.value(),
                }
            )
        return packed

    def ws_text(self) -> bytes:
        """The WebSocket text frame carrying the JSON envelope."""
        frame = self._ws_text
        if frame is None:
            frame = self._ws_text = websocket.encode_frame(
                websocket.OP_TEXT, self.envelope().encode()
            )
        return frame

    def ws_binary(self) -> bytes:
        """The WebSocket binary frame carrying the msgpack envelope."""
        frame = self._ws_binary
        if frame is None:
            frame = self._ws_binary = websocket.encode_frame(websocket.OP_BINARY, self.msgpack())
        return frame
