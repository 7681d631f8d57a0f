"""A sans-IO Server-Sent Events parser: bytes in, events out.

Theory of operation: :meth:`SSEParser.feed` takes whatever chunk the network produced (any
split, even inside a UTF-8 sequence or between the CR and LF of a CRLF) and returns the events
that chunk completed. It follows the WHATWG "event stream interpretation" rules:

- the body is UTF-8 whatever the headers say (bad bytes become U+FFFD); one byte-order mark at
  the very start of the stream is skipped;
- lines end with CRLF, LF or CR, and nothing else (not U+2028, not form feed);
- a line starting with ``:`` is a comment; ``field: value`` loses one leading space of the value;
  a line without a colon is a field with an empty value; unknown fields are ignored;
- ``data`` lines are joined with LF; an empty line dispatches; a block with no ``data`` line is
  not dispatched (an ``id`` in it still becomes the last event id);
- ``id`` persists for later events that carry none; an ``id`` containing NUL is ignored; an empty
  ``id`` resets it to ``""``;
- ``retry`` is honoured only when it is ASCII digits;
- the event type defaults to ``message``; an unfinished event at the end of the stream is dropped
  (simply never returned).

Invariant: the parser never buffers more than ``max_line_chars`` characters of one line (plus
one event's data); a longer line raises :class:`ProtocolError` instead of growing without bound.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Final

from ._errors import ProtocolError

__all__ = ["MAX_LINE_CHARS", "SSEParser", "ServerSentEvent"]

MAX_LINE_CHARS: Final = 16 * 1024 * 1024
"""Default longest line (characters) and longest event data the parser buffers."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: the type (``"message"`` when the block had no ``event`` field or an empty one).
        data: the ``data`` lines joined with LF.
        id: the last event id in force when the event was dispatched (``""`` if none).
    """

    event: str
    data: str
    id: str


class SSEParser:
    """Incremental WHATWG event-stream parser.

    Attributes:
        last_event_id: the id a reconnecting client should send (updated at every dispatch,
            data-less blocks included, as the standard says).
        retry_ms: the last valid ``retry`` value, or ``None``.
    """

    def __init__(self, *, max_line_chars: int = MAX_LINE_CHARS) -> None:
        # utf-8-sig drops exactly one BOM at the start, even when it is split across chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._max_line_chars = max_line_chars
        self._line = ""
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF is its CRLF tail
        self._data: list[str] = []
        self._data_chars = 0
        self._event_type = ""
        self._id_buffer = ""
        self.last_event_id = ""
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume a chunk of the body.

        Args:
            chunk: raw bytes, split anywhere.

        Returns:
            The events completed by this chunk, in order (often empty).

        Raises:
            ProtocolError: a line or an event's data exceeded ``max_line_chars``.
        """
        text = self._decoder.decode(chunk)
        events: list[ServerSentEvent] = []
        if self._skip_lf and text:
            if text[0] == "\n":
                text = text[1:]
            self._skip_lf = False
        start = 0
        length = len(text)
        while start < length:
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            if cr < 0 and lf < 0:
                self._append_partial(text[start:])
                break
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            line = self._line + text[start:end] if self._line else text[start:end]
            self._line = ""
            if len(line) > self._max_line_chars:
                raise ProtocolError(f"SSE line longer than {self._max_line_chars} characters")
            start = end + 1
            if text[end] == "\r":
                if start < length:
                    if text[start] == "\n":
                        start += 1
                else:
                    self._skip_lf = True
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        return events

    def _append_partial(self, fragment: str) -> None:
        if len(self._line) + len(fragment) > self._max_line_chars:
            raise ProtocolError(f"SSE line longer than {self._max_line_chars} characters")
        self._line += fragment

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_chars += len(value) + 1
            if self._data_chars > self._max_line_chars:
                raise ProtocolError(f"SSE event data longer than {self._max_line_chars} characters")
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer
        if not self._data:
            self._event_type = ""
            return None
        event = ServerSentEvent(
            event=self._event_type or "message",
            data="\n".join(self._data),
            id=self._id_buffer,
        )
        self._data = []
        self._data_chars = 0
        self._event_type = ""
        return event
