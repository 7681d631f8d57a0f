"""HTTP/1.1 requests on the data plane: parsed strictly by h11, answered by templates.

h11 parses every request head and body (it rejects what RFC 9112 rejects). Answers on the
hot path are small fixed templates written by hand: the data plane never needs h11's
response state machine, and skipping it keeps a publish cheap. One fresh h11 connection
per request keeps the bytes of the *next* request available (``trailing_data``), so a
kept-alive connection can still be handed to hypercorn when its next request is not hot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import h11
import trio

from .errors import BadRequest, ClientError, HeadersTooLarge, LengthRequired, PayloadTooLarge

RECEIVE_BYTES: Final = 65536
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class ConnectionDone(Exception):
    """The client closed the connection, or it was idle too long, between requests."""


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


H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n"
TLS_HANDSHAKE: Final = 0x16


@dataclass(slots=True)
class Request:
    """One request head, plus what the data plane needs to answer it.

    Attributes:
        method, target: as sent (``target`` includes the query string).
        headers: lowercased names; repeated headers joined with ``", "``.
        keep_alive: whether the connection may serve another request after this one.
        raw: every byte received for this request so far (for a handoff to hypercorn).
        after_head: the bytes received after the head (a body, or WebSocket frames).
    """

    method: str
    target: str
    headers: dict[str, str]
    keep_alive: bool
    raw: bytes
    after_head: bytes
    _conn: h11.Connection

    @property
    def waits_for_continue(self) -> bool:
        return self._conn.client_is_waiting_for_100_continue


class RequestReader:
    """Reads successive requests from one connection.

    Args:
        stream: the connection.
        max_head_bytes: the largest request head accepted (431 beyond).
        idle_timeout: seconds to wait for a request (or the rest of one).
    """

    def __init__(
        self, stream: trio.SocketStream, *, max_head_bytes: int, idle_timeout: float
    ) -> None:
        self.stream = stream
        self.max_head_bytes = max_head_bytes
        self.idle_timeout = idle_timeout
        self._leftover = b""

    async def _receive(self) -> bytes:
        with trio.move_on_after(self.idle_timeout):
            try:
                return await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
        raise ConnectionDone("idle timeout")

    async def next_request(self) -> Request:
        """Read the next request head.

        Raises:
            ConnectionDone: the client closed, or sent nothing for ``idle_timeout``.
            BadRequest, HeadersTooLarge: a malformed or oversized head (answer and close).
        """
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head_bytes)
        raw = self._leftover
        self._leftover = b""
        fed = len(raw)
        if raw:
            conn.receive_data(raw)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:
                    raise HeadersTooLarge(
                        f"request head is larger than {self.max_head_bytes} bytes"
                    ) from None
                reason = str(exc).split(":", 1)[0]  # h11 appends the raw bytes; keep the logs clean
                raise BadRequest(f"malformed HTTP request: {reason}") from None
            if event is h11.NEED_DATA:
                data = await self._receive()
                if not data and not raw:
                    raise ConnectionDone("closed")
                raw += data
                if not fed:  # the first bytes of a request say which protocol it is
                    if raw[0] == TLS_HANDSHAKE:
                        raise NotHttp1("tls", raw)
                    if H2_PREFACE.startswith(raw[: len(H2_PREFACE)]):
                        if len(raw) < len(H2_PREFACE):
                            continue  # maybe the HTTP/2 preface: wait for all of it
                        raise NotHttp1("h2", raw)
                conn.receive_data(raw[fed:])
                fed = len(raw)
                continue
            if isinstance(event, h11.Request):
                # h11 bounds only heads that arrive in pieces; bound whole ones too.
                if len(raw) - len(conn.trailing_data[0]) > self.max_head_bytes:
                    raise HeadersTooLarge(
                        f"request head is larger than {self.max_head_bytes} bytes"
                    )
                headers: dict[str, str] = {}
                for name, value in event.headers:
                    key = name.decode("latin-1")
                    text = value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                connection = headers.get("connection", "").lower()
                if event.http_version == b"1.0":
                    keep_alive = "keep-alive" in connection
                else:
                    keep_alive = "close" not in connection
                return Request(
                    method=event.method.decode("ascii"),
                    target=event.target.decode("ascii", "replace"),
                    headers=headers,
                    keep_alive=keep_alive,
                    raw=raw,
                    after_head=bytes(conn.trailing_data[0]),
                    _conn=conn,
                )
            raise ConnectionDone("closed")

    async def read_body(self, request: Request, max_bytes: int) -> bytes:
        """Read the request body, at most ``max_bytes``.

        Raises:
            PayloadTooLarge: the body is (or announces to be) larger than ``max_bytes``.
            LengthRequired: a body with neither a length nor chunked encoding.
            BadRequest: malformed framing.
            ConnectionDone: the client went away mid-body.
        """
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise PayloadTooLarge(f"body of {length} bytes is over the limit of {max_bytes}")
        if (
            length is None
            and "transfer-encoding" not in request.headers
            and request.method == "POST"
        ):
            raise LengthRequired("send Content-Length or Transfer-Encoding: chunked")
        conn = request._conn
        if conn.client_is_waiting_for_100_continue:
            await self.stream.send_all(CONTINUE)
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise BadRequest(f"malformed HTTP body: {exc}") from None
            if event is h11.NEED_DATA:
                data = await self._receive()
                if not data:
                    raise ConnectionDone("closed mid-body")
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_bytes:
                    raise PayloadTooLarge(f"body is over the limit of {max_bytes} bytes")
            elif isinstance(event, h11.EndOfMessage):
                self._leftover = bytes(conn.trailing_data[0])
                return bytes(body)
            else:
                raise ConnectionDone("closed mid-body")

    def finish_bodyless(self, request: Request) -> None:
        """Mark a request without a body (GET) as read, keeping what follows it."""
        conn = request._conn
        while True:
            event = conn.next_event()
            if isinstance(event, h11.EndOfMessage) or event is h11.NEED_DATA:
                break
        self._leftover = bytes(conn.trailing_data[0])


Headers = list[tuple[str, str]]


def _lines(headers: Headers) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


def response(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "application/json",
    keep_alive: bool = True,
    headers: Headers | None = None,
) -> bytes:
    """A complete HTTP/1.1 response with a body."""
    phrase = HTTPStatus(status).phrase
    connection = "" if keep_alive else "Connection: close\r\n"
    type_line = f"Content-Type: {content_type}\r\n" if body or status != 204 else ""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n{type_line}"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n{connection}"
        f"{_lines(headers or [])}\r\n"
    )
    return head.encode("latin-1") + body


def json_response(
    status: int, payload: object, *, keep_alive: bool = True, headers: Headers | None = None
) -> bytes:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
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
