"""Server-Sent Events wire format (sans-IO): event frames, notices, heartbeats.

Rules kept here (shared/SSE.md): every data event carries ``id:``; data is split on CR,
LF and CRLF only (never ``str.splitlines``, which also splits on U+2028 and friends that
browsers pass through); exactly one space after ``data:``; one ``data:`` line even for an
empty payload; UTF-8 without a BOM; each frame, blank line included, is one ``bytes``
object so it is written in one piece.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")

#: A comment line: keeps proxies from closing an idle stream and is invisible to clients.
#: No blank line follows, so no parser can mistake it for a data-less event.
HEARTBEAT: Final = b":\n"

#: The heartbeat of ``envelope=1`` streams: a real event a page can see (comments never
#: reach JavaScript), without ``id:`` so the browser keeps its last event id.
ENVELOPE_HEARTBEAT: Final = (
    b"event: broker.heartbeat\n"
    b'data: {"id":null,"topic":null,"event":"broker.heartbeat","data":{}}\n\n'
)

#: Sent once right after the response head, so `open` fires and proxies see bytes at once.
PREAMBLE: Final = b": broker\n\n"


def data_lines(data: str) -> str:
    """``data:`` lines for a payload, each ending in LF."""
    if "\n" not in data and "\r" not in data:
        return f"data: {data}\n"
    return "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))


def encode_frame(
    event_id: str | None, event_type: str | None, data: str, *, retry_ms: int | None = None
) -> bytes:
    """One complete SSE event: ``id``, optional ``event`` and ``retry``, data, blank line.

    ``event_id=None`` writes no ``id:`` line, so the client's last event id stays as it was
    (an empty ``id:`` would reset it).
    """
    head = f"id: {event_id}\n" if event_id is not None else ""
    if event_type is not None:
        head += f"event: {event_type}\n"
    if retry_ms is not None:
        head += f"retry: {retry_ms}\n"
    return (head + data_lines(data) + "\n").encode()


def encode_notice(
    event_id: str | None, event_type: str, payload: dict[str, Any], *, retry_ms: int | None = None
) -> bytes:
    """A ``broker.*`` notice: a real event with JSON data (never a data-less block)."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return encode_frame(event_id, event_type, data, retry_ms=retry_ms)


def envelope_json(event_id: str, topic: str | None, event_type: str | None, data_json: str) -> str:
    """The JSON object a WebSocket or ``envelope=1`` client receives for one event.

    ``data_json`` is already JSON text (a publisher's own JSON, or a dumped string), so it is
    embedded as is rather than parsed and dumped again.
    """
    dumps = json.dumps
    return (
        f'{{"id":"{event_id}","topic":{dumps(topic, ensure_ascii=False)},'
        f'"event":{dumps(event_type)},"data":{data_json}}}'
    )


class SseCodec:
    """Frames for an SSE subscriber (see ``subscriber.Codec``).

    Args:
        envelope: send the JSON envelope ``{"id","topic","event","data"}`` as data and no
            ``event:`` line for user events (``envelope=1``), so one ``onmessage`` handler
            sees every event of a multi-topic stream with its topic and type.
    """

    goodbye: Final = b""
    ended: Final = b""
    expired: Final = b""

    def __init__(self, *, envelope: bool = False) -> None:
        self.envelope = envelope
        self.heartbeat = ENVELOPE_HEARTBEAT if envelope else HEARTBEAT
        # Events carry their frames; picking the attribute avoids a call per delivery.
        self.frame = _sse_envelope_of if envelope else _sse_of

    def notice(
        self,
        event_type: str,
        event_id: str | None,
        payload: dict[str, Any],
        retry_ms: int | None = None,
    ) -> bytes:
        """A ``broker.*`` notice; ``event_id=None``: no id (the client's position stays)."""
        if not self.envelope:
            return encode_notice(event_id, event_type, payload, retry_ms=retry_ms)
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        envelope = envelope_json(event_id or "", None, event_type, data)
        if event_id is None:
            envelope = '{"id":null' + envelope[len('{"id":""') :]
        return encode_frame(event_id, event_type, envelope, retry_ms=retry_ms)


def _sse_of(event: Any) -> bytes:
    return event.sse  # type: ignore[no-any-return]  # an hub.events.Event: wire sits below hub


def _sse_envelope_of(event: Any) -> bytes:
    return event.sse_envelope()  # type: ignore[no-any-return]  # as above
