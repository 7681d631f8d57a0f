"""Fuzz WebSocket frames after a real handshake: opcodes, flags, masks, lengths, fragments,
and command payloads in JSON and msgpack (harness.py has the properties).

WebSocket specifics: the broker's close code is never 1011 (an internal error); it
publishes no more events than the case sent ``publish`` commands, and at least as many as
it acknowledged.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Final

import msgpack
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.harness import ANSWER_WAIT_SECONDS, FUZZ_SETTINGS, TOPICS, Exchange, Target

BROKER_ENV = {
    "BROKER_WEBSOCKET_ALLOW_PUBLISH": "true",
    "BROKER_WEBSOCKET_MAX_MESSAGE_BYTES": "4096",
    # Memory storage here (the other modules fuzz the durable default): a session ends with
    # a ping, and its pong marks "every answer is in" only where a publish is answered at
    # once. On the durable store an ack follows the group commit, and the reader answers
    # pings meanwhile, so the pong may come first (wsconnection.py).
    "BROKER_STORAGE_KIND": "memory",
}

#: Close codes a bad client may get: normal, going away, protocol error, none (the echo of
#: an empty close), bad data, policy, too big. Never 1011 (internal error).
CLOSE_CODES = {1000, 1001, 1002, 1003, 1005, 1007, 1008, 1009}

topics = st.one_of(
    st.sampled_from(TOPICS),
    st.sampled_from(TOPICS),
    st.text(max_size=10),
    st.integers(-(2**63), 2**63),
    st.none(),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
commands = st.fixed_dictionaries(
    {},
    optional={
        "op": st.one_of(
            st.sampled_from(["subscribe", "unsubscribe", "publish", "publish"]), json_values
        ),
        "topics": st.one_of(st.lists(topics, max_size=4), json_values),
        "topic": topics,
        "data": json_values,
        "event": st.one_of(st.sampled_from(["x", "error", "broker.x", ""]), json_values),
        "ref": json_values,
    },
)


packed_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(0, 9), children, max_size=3)
    ),
    max_leaves=8,
)
good_commands = st.one_of(
    st.fixed_dictionaries(
        {"op": st.just("publish"), "topic": st.sampled_from(TOPICS), "data": json_values},
        optional={"event": st.sampled_from(["x", "y", "error"]), "ref": packed_values},
    ),
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["subscribe", "unsubscribe"]),
            "topics": st.lists(st.sampled_from(TOPICS), min_size=1, max_size=3),
        },
        optional={"ref": packed_values},
    ),
)


def _pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


payloads = st.one_of(
    commands.map(lambda c: json.dumps(c).encode()),
    commands.map(_pack),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.sampled_from(
        [b"\xff\xfe", b"\xed\xa0\x80", b"{" * 300, b"\x03\xe8", b"\x03\xf3bye", b"\x00"]
    ),
)


@st.composite
def frame(draw: st.DrawFn, *, wild: bool) -> tuple[bytes, bool]:
    """One client frame, and whether it carries a ``publish`` command.

    A tame frame is well formed (final, masked, exact length; a text frame's payload is
    JSON, a binary frame's msgpack), so its command reaches the broker's command code; a
    wild one draws every field.
    """
    key = draw(st.binary(min_size=4, max_size=4))
    if not wild:
        command = draw(st.one_of(good_commands, commands))
        binary = draw(st.booleans())
        try:
            payload = _pack(command) if binary else json.dumps(command).encode()
        except TypeError:  # bytes have no JSON form: send them as msgpack
            binary, payload = True, _pack(command)
        first = 0x80 | (0x2 if binary else 0x1)
        return _frame(first, payload, True, "exact", key), b"publish" in payload
    payload = draw(payloads)
    opcode = draw(st.one_of(st.sampled_from([0x1, 0x2, 0x0, 0x8, 0x9, 0xA]), st.integers(0, 15)))
    fin = draw(st.sampled_from([True, True, True, False]))
    rsv = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 4, 7]))
    masked = draw(st.sampled_from([True, True, True, False]))
    encoding = draw(st.sampled_from(["exact"] * 5 + ["16", "64", "lie", "huge"]))
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    if encoding == "lie":
        length += draw(st.integers(1, 100))
    if encoding == "huge":
        length = draw(st.sampled_from([2**16, 2**31, 2**63 - 1, 2**64 - 1]))
    return _frame(first, payload, masked, encoding, key, length), b"publish" in payload


def _frame(
    first: int, payload: bytes, masked: bool, encoding: str, key: bytes, length: int | None = None
) -> bytes:
    length = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if encoding == "16" or (encoding != "64" and 126 <= length < 2**16):
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    elif encoding == "64" or length >= 2**16:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    else:
        head = struct.pack("!BB", first, mask_bit | length)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if masked else payload
    return head + (key if masked else b"") + body


@st.composite
def session(draw: st.DrawFn) -> tuple[bytes, list[bytes], int]:
    path = draw(st.sampled_from(["/ws", "/ws?topic=fz/a", "/topics/fz/b/ws", "/ws?format=msgpack"]))
    protocol = draw(st.sampled_from(["", "broker.json", "broker.msgpack", "x, broker.msgpack"]))
    upgrade = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + (f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else "")
        + "\r\n"
    ).encode()
    tame = st.lists(frame(wild=False), max_size=5)
    frames = draw(tame) + draw(st.lists(frame(wild=True), max_size=2)) + draw(tame)
    return upgrade, [f for f, _ in frames], sum(p for _, p in frames)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the broker's frames (unmasked, per RFC 6455 §5.1)."""
    frames, at = [], 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, at)
            at += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, at)
            at += 8
        if at + length > len(data):
            break
        frames.append((opcode, data[at : at + length]))
        at += length
    return frames


#: The last frame of every session: a ping whose pong says the broker read everything before.
SENTINEL: Final = b"fz-end"
SENTINEL_PING: Final = _frame(0x89, SENTINEL, True, "exact", b"\x00\x00\x00\x00")


def converse(frames: list[bytes]):
    def hold(sock: socket.socket) -> bytes:
        received = b""
        for data in [*frames, SENTINEL_PING]:
            try:
                sock.sendall(data)
            except OSError:
                break
        deadline = time.monotonic() + ANSWER_WAIT_SECONDS
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                break
            received += chunk
            if b"\x8a\x06" + SENTINEL in received:  # the pong: every answer is in
                break
            deadline = time.monotonic() + ANSWER_WAIT_SECONDS
        return received

    return hold


def check_session(target: Target, got: Exchange, publish_commands: int, case: object) -> None:
    [answer] = got.answers
    assert answer.status == 101, (answer.status, answer.body, case)
    acks = 0
    for opcode, payload in server_frames(answer.body):
        if opcode == 0x8:
            # no code: the echo of a client's empty close frame (RFC 6455 §5.5.1)
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            assert code in CLOSE_CODES, (code, payload, case, target.broker_errors())
            target.outcomes[f"ws close {code}"] += 1
        elif opcode in (0x1, 0x2):
            message = json.loads(payload) if opcode == 0x1 else msgpack.unpackb(payload)
            data = message.get("data") or {}
            if message["event"] == "broker.ack" and data.get("op") == "publish":
                acks += 1
                target.outcomes["ws publish ack"] += 1
    published = _between(target, acks, publish_commands, case)
    target.check(got, acknowledged=published, case=case)


def _between(target: Target, acks: int, most: int, case: object) -> int:
    """The number of events the broker published in this case, checked against the bounds."""
    published = target.stats()["published"] - target.published
    assert acks <= published <= most, (acks, published, most, case)
    return published


UPGRADE: Final = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
REF_BYTES: Final = _pack({"op": "publish", "topic": "fz/a", "data": None, "ref": b""})


def test_websocket_frames(fuzz_broker, bystander):
    """Random frames after the handshake, then the properties (module docstring)."""
    target = Target("websocket", fuzz_broker, bystander)

    @FUZZ_SETTINGS
    @example(  # a publish command split over a text frame and a continuation
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            [b"\x01\x80\x00\x00\x00\x00", b"\x80\x80\x00\x00\x00\x00"],
            0,
        )
    )
    @example(  # found here: a msgpack ``ref`` of bytes made the JSON ack raise TypeError
        (UPGRADE, [_frame(0x82, REF_BYTES, True, "exact", b"\x00" * 4)], 1)
    )
    @example((UPGRADE, [b"\x81\x82\x00\x00\x00\x00{}", b"\x88\x80\x00\x00\x00\x00"], 0))
    @given(session())
    def case(conversation: tuple[bytes, list[bytes], int]) -> None:
        upgrade, frames, publish_commands = conversation
        target.begin()
        got = target.exchange(upgrade, hold=converse(frames))
        check_session(target, got, publish_commands, conversation)

    case()
    target.finish()
