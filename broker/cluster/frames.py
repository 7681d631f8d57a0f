"""The peer link's frames: 4-byte big-endian length, then one msgpack map (sans-IO).

Why length-prefixed TCP and not WebSocket: the peer link is a private, persistent,
bidirectional byte stream between two brokers. A length prefix bounds every frame before a
byte of it is buffered, needs no HTTP handshake, and costs 4 bytes; a WebSocket would add
an upgrade, masking and a second framing layer for nothing a peer needs.

Frame types (``t``):

    hello   {node, origin, nonce, addr}       first frame on a link, both directions
    auth    {mac}                             the handshake's proofs (see auth.py)
    members {peers: {node: addr},             gossip: everyone this node knows, their
             origins?: {node: origin},        origins, and the removed members
             gone?: {node: origin}}           (tombstones, membership.py)
    hb      {v: {origin: seq},                heartbeat and catch-up digest: the vector
             lo?: {origin: seq},              (highest seq held) and, where not 1, the
             ret?: [origin]}                  lowest seq still held (catchup.py); origins
                                              it retired lately (membership.py)
    ev      {o, s, tp, e, d, j, ts, r, f,     one event: origin, seq, topic, type, data,
             a?}                              is_json, published_at, retain, final; a:
                                              the origin waits for an ack (ack=replicated)
    pull    {o, after, n}                     "send me up to n events of o after seq after"
    page    {o, after, n, to, lo, tp?}        answer to a pull, after its ev frames: sent
                                              after+1..to; the lowest seq held is lo; if
                                              after+1 < lo, tp lists the topics its index
                                              says after+1..lo-1 were on (absent: unknown)
    ack     {o, s}                            "I have delivered origin o up to s" (sent to
                                              the origin: replicated acknowledgement)
    gap     {o, to}                           (older nodes; ignored)
    bye     {}                                a clean goodbye

Anything else, a frame over the size limit, or bytes that are not msgpack raise
:class:`FrameError`; the link is then closed and logged, and nothing else changes.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

PREFIX: Final = struct.Struct("!I")
DEFAULT_MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
TYPES: Final = frozenset(
    {"hello", "auth", "members", "hb", "ev", "pull", "page", "ack", "gap", "bye"}
)


class FrameError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(frame: dict[str, Any]) -> bytes:
    """One frame, length prefix included."""
    body: bytes = msgpack.packb(frame, use_bin_type=True)
    return PREFIX.pack(len(body)) + body


def encode_event(
    *,
    origin: str,
    seq: int,
    topic: str,
    event_type: str | None,
    data: str,
    is_json: bool,
    published_at: float,
    retain: bool,
    final: bool,
    ack: bool = False,
) -> bytes:
    frame = {
        "t": "ev",
        "o": origin,
        "s": seq,
        "tp": topic,
        "e": event_type,
        "d": data,
        "j": is_json,
        "ts": published_at,
        "r": retain,
        "f": final,
    }
    if ack:
        frame["a"] = True
    return encode(frame)


class FrameDecoder:
    """Splits a byte stream into frames.

    Args:
        max_frame_bytes: the largest frame accepted; a larger length prefix is an error
            before any of its body is buffered.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> list[dict[str, Any]]:
        """Add received bytes; return the complete frames, validated.

        Raises:
            FrameError: oversized, undecodable or malformed frames.
        """
        self._buffer += data
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def add(self, data: bytes | bytearray) -> None:
        """Buffer received bytes without decoding them (see :meth:`next_frame`)."""
        self._buffer += data

    def next_frame(self) -> dict[str, Any] | None:
        """The next complete frame in the buffer, validated, or ``None``.

        One frame at a time lets a caller change :attr:`max_frame_bytes` between frames
        (the peer handshake accepts only small frames until the peer is authenticated).

        Raises:
            FrameError: oversized, undecodable or malformed frames.
        """
        buffer = self._buffer
        if len(buffer) < PREFIX.size:
            return None
        (length,) = PREFIX.unpack_from(buffer)
        if length > self.max_frame_bytes:
            raise FrameError(f"frame of {length} bytes is over {self.max_frame_bytes}")
        if len(buffer) < PREFIX.size + length:
            return None
        body = bytes(buffer[PREFIX.size : PREFIX.size + length])
        del buffer[: PREFIX.size + length]
        return _check(body)


def _check(body: bytes) -> dict[str, Any]:
    try:
        frame = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException, msgpack.ExtraData) as exc:
        raise FrameError(f"not msgpack: {exc}") from None
    if not isinstance(frame, dict) or frame.get("t") not in TYPES:
        raise FrameError("not a peer frame")
    kind = frame["t"]
    try:
        if kind == "ev":
            _need(frame, o=str, s=int, tp=str, d=str, j=bool, ts=float | int, r=bool, f=bool)
            if frame.get("e") is not None and not isinstance(frame["e"], str):
                raise FrameError("bad event type")
            if not isinstance(frame.get("a", False), bool):
                raise FrameError("bad ack flag")
            if frame["s"] < 1:
                raise FrameError("bad seq")
        elif kind == "hello":
            _need(frame, node=str, origin=str, nonce=bytes, addr=str)
        elif kind == "auth":
            _need(frame, mac=bytes)
        elif kind == "hb":
            _need(frame, v=dict)
            _vector(frame["v"])
            if "lo" in frame:
                _vector(frame["lo"])
            retired = frame.get("ret", [])
            if not isinstance(retired, list) or not all(isinstance(o, str) for o in retired):
                raise FrameError("bad ret")
        elif kind == "members":
            _need(frame, peers=dict)
            if not all(
                isinstance(k, str) and isinstance(v, str) for k, v in frame["peers"].items()
            ):
                raise FrameError("bad member list")
            for key in ("origins", "gone"):
                table = frame.get(key, {})
                if not isinstance(table, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in table.items()
                ):
                    raise FrameError(f"bad {key}")
        elif kind == "gap":
            _need(frame, o=str, to=int)
        elif kind == "pull":
            _need(frame, o=str, after=int, n=int)
            if frame["after"] < 0 or frame["n"] < 1:
                raise FrameError("bad pull")
        elif kind == "page":
            _need(frame, o=str, after=int, n=int, to=int, lo=int)
            topics = frame.get("tp")
            if topics is not None and (
                not isinstance(topics, list) or not all(isinstance(t, str) for t in topics)
            ):
                raise FrameError("page frame: bad tp")
        elif kind == "ack":
            _need(frame, o=str, s=int)
    except KeyError as exc:
        raise FrameError(f"{kind} frame without {exc}") from None
    return frame


def _vector(vector: Any) -> None:
    if not isinstance(vector, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in vector.items()
    ):
        raise FrameError("bad vector")


def _need(frame: dict[str, Any], **types: Any) -> None:
    for name, kind in types.items():
        if not isinstance(frame[name], kind) or (kind is int and isinstance(frame[name], bool)):
            raise FrameError(f"{frame['t']} frame: bad {name}")
