"""WebSocket wire format for the data plane (sans-IO): frames, codec, client commands.

Server-to-client frames are never masked (RFC 6455 §5.1) and the broker never negotiates
compression, so one encoded frame per event is valid on every connection: events carry
their WebSocket frames like their SSE frames, encoded once and shared.

Messages (docs/protocol.md): every event and notice is the envelope
``{"id","topic","event","data"}``, as a JSON text frame or, when the client asked for
msgpack, a binary frame. Client commands are parsed in ``commands.py``.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final

import msgpack

from ..core.errors import BadRequest

OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9

SUBPROTOCOL_JSON: Final = "broker.json"
SUBPROTOCOL_MSGPACK: Final = "broker.msgpack"

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120])


#: Sent when a connection was silent: the client must answer with a pong.
PING: Final = encode_frame(OP_PING, b"")
GOING_AWAY: Final = close_frame(CLOSE_GOING_AWAY, "broker shutting down")
TOKEN_EXPIRED: Final = close_frame(CLOSE_POLICY_VIOLATION, "token expired")


def _notice_object(
    event_type: str, event_id: str | None, payload: dict[str, Any]
) -> dict[str, Any]:
    return {"id": event_id, "topic": None, "event": event_type, "data": payload}


class WsCodec:
    """Frames for a WebSocket subscriber (see ``subscriber.Codec``).

    Args:
        binary: msgpack binary frames instead of JSON text frames.
    """

    def __init__(self, *, binary: bool = False) -> None:
        self.binary = binary
        self.frame = _ws_binary_of if binary else _ws_text_of
        self.heartbeat = self.message(_notice_object("broker.heartbeat", None, {}))
        #: Written after the final ``broker.shutdown`` notice.
        self.goodbye = GOING_AWAY
        #: Written after ``broker.end`` when every topic of the connection has ended.
        self.ended = close_frame(CLOSE_NORMAL, "topics ended")
        #: Written after ``broker.auth_expired`` (the token that opened the stream expired).
        self.expired = TOKEN_EXPIRED

    def message(self, obj: dict[str, Any]) -> bytes:
        if self.binary:
            return encode_frame(OP_BINARY, msgpack.packb(obj))
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return encode_frame(OP_TEXT, text.encode())

    def notice(
        self,
        event_type: str,
        event_id: str | None,
        payload: dict[str, Any],
        retry_ms: int | None = None,
    ) -> bytes:
        return self.message(_notice_object(event_type, event_id, payload))

    def decode(self, data: bytes | str) -> Any:
        """A client message as a value.

        Raises:
            BadRequest: not JSON/msgpack.
        """
        try:
            if isinstance(data, str):
                return json.loads(data)
            return msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException, msgpack.ExtraData) as exc:
            raise BadRequest(f"malformed command: {exc}") from None


def _ws_text_of(event: Any) -> bytes:
    return event.ws_text()  # type: ignore[no-any-return]  # an hub.events.Event: wire sits below hub


def _ws_binary_of(event: Any) -> bytes:
    return event.ws_binary()  # type: ignore[no-any-return]  # as above
