"""HTTP/1.1 on the data plane: a strict request parser over a raw socket, and answer templates.

Why not h11, which parsed these requests until 2026-11: measured under a publish load
(``load/``, 16 keep-alive connections), h11 took 46 µs of the ~210 µs of CPU a publish cost,
and Trio's stream layer (a cancel scope and two checkpoints per receive and per send)
another ~30 µs. ``shared/PERF.md`` asks for a proven parser unless a measurement shows it is
the wall; this one is the measured exception, so it is kept small and strict, and
``tests/unit/test_request_parser.py`` holds it to h11 as an oracle: every head it accepts,
h11 accepts with the same method, target and fields, on a corpus of valid and malformed
heads and on thousands of seeded random mutations of them.

Stricter than h11, on purpose (RFC 9112 allows each of these refusals):
* lines end with CRLF; a bare LF or CR anywhere in a head is a 400 (h11 accepts bare LF);
* obsolete line folding and control characters in field values are a 400;
* ``Content-Length`` together with ``Transfer-Encoding``, or ``Transfer-Encoding`` in an
  HTTP/1.0 request, is a 400 (request smuggling); more than one ``Host`` is a 400;
* any HTTP version other than 1.x is a 505.

The bytes of the *next* request stay in the buffer, so a kept-alive connection can still
be handed to hypercorn, everything already read included, when its next request is not hot.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import trio

from ..core.errors import (
    BadRequest,
    ClientError,
    HeadersTooLarge,
    LengthRequired,
    NotImplementedCoding,
    PayloadTooLarge,
    VersionNotSupported,
)

RECEIVE_BYTES: Final = 65536
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n"
TLS_HANDSHAKE: Final = 0x16
#: Requests served back to back from one buffer before the connection lets others run.
PIPELINE_BURST: Final = 16

_TOKEN: Final = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VCHAR: Final = r"[\x21-\x7e\x80-\xff]"
_REQUEST_LINE: Final = _TOKEN.join(["(", r") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])"])
_FIELD: Final = _TOKEN + r":[ \t]*(?:" + _VCHAR + r"+(?:[ \t]+" + _VCHAR + r"+)*)?[ \t]*"
#: A whole head (decoded as latin-1) in one match: one pass in C, then cheap splits.
_HEAD: Final = re.compile(_REQUEST_LINE + r"\r\n((?:" + _FIELD + r"\r\n)*)")
_REQUEST_LINE_ONLY: Final = re.compile(_REQUEST_LINE + r"\r\n")
_FIELD_LINE: Final = re.compile(_FIELD.encode("latin-1"))
_CHUNK_HEAD: Final = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[\t\x20-\x7e\x80-\xff]*)?")
_MAX_LENGTH_DIGITS: Final = 18


class ConnectionDone(Exception):
    """The client closed the connection (between requests, or in the middle of one)."""


class NotHttp1(Exception):
    """The connection speaks TLS or HTTP/2 (prior knowledge): it belongs to hypercorn.

    Attributes:
        protocol: ``"tls"`` or ``"h2"``.
        raw: the bytes read so far.
    """

    def __init__(self, protocol: str, raw: bytes) -> None:
        super().__init__(protocol)
        self.protocol = protocol
        self.raw = raw


@dataclass(slots=True)
class Request:
    """One request head, plus what the data plane needs to answer it.

    Attributes:
        method, target: as sent (``target`` includes the query string).
        headers: lowercased names; repeated fields joined with ``", "``.
        keep_alive: whether the connection may serve another request after this one.
        content_length: the body's length; ``None`` without the header.
        chunked: the body comes in chunked transfer coding.
        expects_continue: the client sent ``Expect: 100-continue`` (HTTP/1.1).
    """

    method: str
    target: str
    headers: dict[str, str]
    keep_alive: bool
    content_length: int | None
    chunked: bool
    expects_continue: bool
    _buffer: bytes
    _start: int
    _end: int

    @property
    def raw(self) -> bytes:
        """Every byte received from the start of this request (for a handoff)."""
        return self._buffer[self._start :]

    @property
    def after_head(self) -> bytes:
        """The bytes received after the head (a body, or WebSocket frames)."""
        return self._buffer[self._end :]

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


#: Heads seen lately, parsed: a publisher sends the same head over and over (only the body
#: changes), and a parse cost ~5 µs of a ~100 µs publish. Small heads only, bounded.
_PARSED: dict[bytes, tuple[str, str, dict[str, str], bool, int | None, bool, bool]] = {}
_PARSED_MAX_ENTRIES: Final = 512
_PARSED_MAX_HEAD: Final = 2048


def parse_head(
    data: bytes, start: int, max_head_bytes: int, search_from: int | None = None
) -> Request | None:
    """Parse the request head that starts at ``data[start]``.

    Args:
        search_from: where to resume looking for the head's end (bytes before it were
            already searched), so a head that trickles in is not rescanned from the start.

    Returns:
        the request, or ``None`` while the head is incomplete.

    Raises:
        BadRequest, HeadersTooLarge, VersionNotSupported, NotImplementedCoding.
    """
    while data.startswith(b"\r\n", start):  # RFC 9112 §2.2: tolerate blank lines before
        start += 2
    end = data.find(b"\r\n\r\n", start if search_from is None else max(start, search_from))
    if end < 0:
        if len(data) - start > max_head_bytes:
            raise HeadersTooLarge(f"request head is larger than {max_head_bytes} bytes")
        if data.count(b"\n", start) != data.count(b"\r\n", start):
            raise BadRequest("malformed HTTP request: lines must end with CRLF")
        return None
    if end + 4 - start > max_head_bytes:
        raise HeadersTooLarge(f"request head is larger than {max_head_bytes} bytes")
    raw_head = data[start:end]
    known = _PARSED.get(raw_head)
    if known is not None:
        method, target, headers, keep_alive, content_length, chunked, expects = known
        return Request(
            method, target, headers, keep_alive, content_length, chunked, expects,
            data, start, end + 4,
        )  # fmt: skip
    text = data[start : end + 2].decode("latin-1")
    head = _HEAD.fullmatch(text)
    if head is None:
        if _REQUEST_LINE_ONLY.match(text) is None:
            raise BadRequest("malformed HTTP request: bad request line")
        raise BadRequest("malformed HTTP request: bad header field")
    if head[3] != "1":
        raise VersionNotSupported(f"HTTP/{head[3]}.{head[4]} is not supported")
    http10 = head[4] == "0"
    headers = {}
    for field in head[5].split("\r\n")[:-1]:
        name, _, value = field.partition(":")
        name = name.lower()
        value = value.strip(" \t")
        if name in headers:
            if name == "host":
                raise BadRequest("malformed HTTP request: more than one Host")
            value = f"{headers[name]}, {value}"
        headers[name] = value
    if not http10 and "host" not in headers:
        raise BadRequest("malformed HTTP request: missing Host")
    content_length = None
    length_field = headers.get("content-length")
    if length_field is not None:
        if "," in length_field:  # repeated fields, joined: all must agree
            lengths = {part.strip() for part in length_field.split(",")}
            if len(lengths) > 1:
                raise BadRequest("malformed HTTP request: conflicting Content-Length")
            length_field = headers["content-length"] = lengths.pop()
        if not (
            length_field.isdigit()
            and length_field.isascii()
            and len(length_field) <= _MAX_LENGTH_DIGITS
        ):
            raise BadRequest("malformed HTTP request: bad Content-Length")
        content_length = int(length_field)
    chunked = False
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if length_field is not None:
            raise BadRequest("malformed HTTP request: both Content-Length and Transfer-Encoding")
        if http10:
            raise BadRequest("malformed HTTP request: Transfer-Encoding in HTTP/1.0")
        if coding.lower() != "chunked":
            raise NotImplementedCoding("only Transfer-Encoding: chunked is supported")
        chunked = True
    connection = headers.get("connection")
    if connection is None:
        keep_alive = not http10
    else:
        connection = connection.lower()
        keep_alive = "keep-alive" in connection if http10 else "close" not in connection
    expect = headers.get("expect")
    expects_continue = expect is not None and not http10 and expect.lower() == "100-continue"
    if len(raw_head) <= _PARSED_MAX_HEAD:
        if len(_PARSED) >= _PARSED_MAX_ENTRIES:
            _PARSED.clear()
        # Shared by every request with this head: the data plane never writes to headers.
        _PARSED[raw_head] = (
            head[1], head[2], headers, keep_alive, content_length, chunked, expects_continue
        )  # fmt: skip
    return Request(
        method=head[1],
        target=head[2],
        headers=headers,
        keep_alive=keep_alive,
        content_length=content_length,
        chunked=chunked,
        expects_continue=expects_continue,
        _buffer=data,
        _start=start,
        _end=end + 4,
    )


class HttpConnection:
    """Successive requests on one client connection, read and answered on its raw socket.

    The socket is used through ``os.read``/``os.write`` and ``trio.lowlevel.wait_readable``:
    no cancel scope and no checkpoint of its own per request. The caller owns the idle
    timeout (a cancel scope around its loop) and fairness comes from waiting for the
    socket, or from a checkpoint after ``PIPELINE_BURST`` pipelined requests.

    The caller's timeouts follow progress through two hooks, called only off the hot path
    (a head or body that did not come in one read): ``on_head_started()`` once per head
    that is still incomplete after a read, ``on_body_bytes(n)`` for each later read of a body.

    Args:
        stream: the connection.
        max_head_bytes: the largest request head accepted (431 beyond).
    """

    def __init__(self, stream: trio.SocketStream, *, max_head_bytes: int) -> None:
        self.stream = stream
        self.max_head_bytes = max_head_bytes
        self._fd = stream.socket.fileno()
        self._data = b""
        self._pos = 0
        self._fresh = True
        self._burst = 0
        self.on_head_started: Callable[[], None] | None = None
        self.on_body_bytes: Callable[[int], None] | None = None

    @property
    def pending(self) -> bool:
        """Whether bytes of a request not yet parsed (a partial head) are buffered."""
        return self._pos < len(self._data)

    def _append(self, chunk: bytes) -> None:
        if self._pos >= len(self._data):
            self._data = chunk
        else:
            self._data = self._data[self._pos :] + chunk
        self._pos = 0

    async def _receive(self) -> bytes:
        """The next bytes from the client; ``b""`` once it closed."""
        if self._fresh:
            # A new connection's first request is usually there already: read before waiting.
            self._fresh = False
            try:
                return os.read(self._fd, RECEIVE_BYTES)
            except BlockingIOError:
                pass
            except OSError:
                return b""
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                return os.read(self._fd, RECEIVE_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                return b""

    async def next_request(self) -> Request:
        """Read the next request head.

        Raises:
            ConnectionDone: the client closed between requests.
            NotHttp1: the connection speaks TLS or HTTP/2.
            ClientError: a malformed or oversized head (answer it and close).
        """
        searched = None
        if self._pos < len(self._data):
            self._burst += 1
            if self._burst >= PIPELINE_BURST:
                self._burst = 0
                await trio.lowlevel.checkpoint()
        while True:
            data, start = self._data, self._pos
            if start < len(data):
                while data.startswith(b"\r\n", start):  # see parse_head
                    start += 2
                self._pos = start
                first = data[start : start + len(H2_PREFACE)]
                if first and first[0] == TLS_HANDSHAKE:
                    raise NotHttp1("tls", data[start:])
                if H2_PREFACE.startswith(first) and first:
                    if len(first) == len(H2_PREFACE):
                        raise NotHttp1("h2", data[start:])
                else:
                    request = parse_head(data, start, self.max_head_bytes, searched)
                    if request is not None:
                        self._pos = request._end
                        return request
                    if searched is None and self.on_head_started is not None:
                        self.on_head_started()
                    searched = len(data) - 3
            chunk = await self._receive()
            self._burst = 0
            if not chunk:
                if self._pos < len(self._data):
                    raise ConnectionDone("closed mid-head")
                raise ConnectionDone("closed")
            if searched is not None:
                searched -= self._pos
            self._append(chunk)

    async def read_body(self, request: Request, max_bytes: int) -> bytes:
        """Read the request body, at most ``max_bytes``.

        Raises:
            PayloadTooLarge: the body is (or announces to be) larger than ``max_bytes``.
            LengthRequired: a POST with neither a length nor chunked coding.
            BadRequest: malformed chunked coding.
            ConnectionDone: the client went away mid-body.
        """
        length = request.content_length
        if length is not None and length > max_bytes:
            raise PayloadTooLarge(f"body of {length} bytes is over the limit of {max_bytes}")
        if length is None and not request.chunked:
            if request.method == "POST":
                raise LengthRequired("send Content-Length or Transfer-Encoding: chunked")
            return b""
        if request.expects_continue:
            await self.send(CONTINUE)
        if request.chunked:
            return await self._read_chunked(max_bytes)
        assert length is not None
        end = self._pos + length
        if end <= len(self._data):
            body = self._data[self._pos : end]
            self._pos = end
            return body
        buffer = bytearray(self._data[self._pos :])
        while len(buffer) < length:
            buffer += await self._more()
        self._data = bytes(buffer[length:])
        self._pos = 0
        return bytes(buffer[:length])

    async def _more(self) -> bytes:
        chunk = await self._receive()
        if not chunk:
            raise ConnectionDone("closed mid-body")
        if self.on_body_bytes is not None:
            self.on_body_bytes(len(chunk))
        return chunk

    async def _read_chunked(self, max_bytes: int) -> bytes:
        buffer = bytearray(self._data[self._pos :])
        self._data, self._pos = b"", 0
        body = bytearray()
        at = 0

        async def line_end() -> int:
            """The end of the line that starts at ``at`` (bounded like a head)."""
            nonlocal buffer, at
            while (end := buffer.find(b"\r\n", at)) < 0:
                if len(buffer) - at > self.max_head_bytes:
                    raise BadRequest("malformed chunked body: line too long")
                del buffer[:at]
                at = 0
                buffer += await self._more()
            return end

        while True:
            end = await line_end()
            head = _CHUNK_HEAD.fullmatch(buffer, at, end)
            if head is None:
                raise BadRequest("malformed chunked body: bad chunk size line")
            size = int(head[1], 16)
            at = end + 2
            if size == 0:
                break
            if len(body) + size > max_bytes:
                raise PayloadTooLarge(f"body is over the limit of {max_bytes} bytes")
            while len(buffer) < at + size + 2:
                buffer += await self._more()
            body += buffer[at : at + size]
            if buffer[at + size : at + size + 2] != b"\r\n":
                raise BadRequest("malformed chunked body: chunk data not followed by CRLF")
            at += size + 2
        while True:  # trailer fields, then the blank line
            end = await line_end()
            if end == at:
                break
            if _FIELD_LINE.fullmatch(buffer, at, end) is None:
                raise BadRequest("malformed chunked body: bad trailer field")
            at = end + 2
        self._data = bytes(buffer[end + 2 :])
        return bytes(body)

    def finish_bodyless(self, request: Request) -> None:
        """Done with a request whose body is not wanted (GET, OPTIONS, an error answer).

        A body that is already buffered is skipped; one that is not makes the connection
        close after the answer, since its framing would be lost.
        """
        if not request.has_body:
            return
        length = request.content_length
        if length is not None and self._pos + length <= len(self._data):
            self._pos += length
        else:
            request.keep_alive = False

    async def send(self, data: bytes) -> None:
        """Write an answer; only what the kernel does not take at once waits.

        Raises:
            trio.BrokenResourceError: the client is gone.
        """
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from None
        if sent < len(data):
            await self.stream.send_all(memoryview(data)[sent:])


Headers = list[tuple[str, str]]


def _lines(headers: Headers) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


@functools.lru_cache(maxsize=128)
def _head_start(status: int, content_type: str | None, keep_alive: bool) -> bytes:
    """A response head up to its ``Content-Length`` value (the same few, over and over)."""
    type_line = f"Content-Type: {content_type}\r\n" if content_type else ""
    connection = "" if keep_alive else "Connection: close\r\n"
    phrase = HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\n{type_line}Cache-Control: no-store\r\n{connection}"
        "Content-Length: "
    ).encode("latin-1")


def response(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "application/json",
    keep_alive: bool = True,
    headers: Headers | None = None,
) -> bytes:
    """A complete HTTP/1.1 response with a body."""
    start = _head_start(status, content_type if body or status != 204 else None, keep_alive)
    extra = _lines(headers).encode("latin-1") if headers else b""
    return b"%s%d\r\n%s\r\n%s" % (start, len(body), extra, body)


_JSON_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_response(
    status: int, payload: object, *, keep_alive: bool = True, headers: Headers | None = None
) -> bytes:
    body = _JSON_ENCODER.encode(payload).encode()
    return response(status, body, keep_alive=keep_alive, headers=headers)


def error_headers(error: ClientError) -> Headers:
    """Headers an error answer carries besides its body (Allow, Retry-After, …)."""
    headers: Headers = []
    allow = getattr(error, "allow", None)
    if allow:
        headers.append(("Allow", allow))
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        headers.append(("Retry-After", str(retry_after)))
    if error.status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="broker"'))
    return headers


def error_response(
    error: ClientError, *, keep_alive: bool, headers: Headers | None = None
) -> bytes:
    return response(
        error.status,
        error.body(),
        keep_alive=keep_alive,
        headers=[*error_headers(error), *(headers or [])],
    )
