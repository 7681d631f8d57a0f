"""The hot routes for connections hypercorn serves (kept-alive after a page, later TLS and
HTTP/2): the same routing, decoding and hub calls as the data plane, over ASGI.

This path costs more per delivery than the data plane (every chunk goes through hypercorn),
but it means a request never depends on which connection it arrived on: a page's ``fetch``
that reuses the connection the page came on publishes exactly like a fresh one.

Headers are read as the data plane reads them (:func:`request_headers`): a repeated field
is joined with ``", "``, never "last one wins", so a request with two ``Authorization``
fields gets the same 400 on both planes. Every ``DELETE /topics/...`` passes here first
(the data plane hands all of them over), so topic administration is authorized here for
both engines before the app or the store sees it.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs, unquote

import trio

from ..core.errors import ClientError, NotFound, PayloadTooLarge
from ..core.topics import check_event_type, check_topic
from ..hub import Unavailable
from ..hub.subscriber import Codec, Sink, SinkBroken, Subscriber
from ..wire.sse import PREAMBLE, SseCodec
from .auth import Identity
from .http1 import error_headers
from .routes import Route, match, split_target
from .session import Streams, degraded_notice, open_stream, publish

log = logging.getLogger(__name__)

Scope = dict[str, Any]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class AsgiSink:
    """A subscriber sink over an ASGI ``send``: nothing is written synchronously."""

    def __init__(self, send: Any) -> None:
        self._send = send

    def send_nowait(self, data: bytes | memoryview) -> int:
        return 0

    async def send(self, data: bytes | memoryview) -> int:
        try:
            await self._send({"type": "http.response.body", "body": bytes(data), "more_body": True})
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            raise SinkBroken("client gone") from None
        return len(data)


class HotRoutes:
    """ASGI middleware: hot routes here, everything else to the wrapped app."""

    def __init__(self, app: Any, streams: Streams) -> None:
        self.app = app
        self.streams = streams
        self.hub = streams.hub
        self.limits = streams.limits
        self.policy = streams.policy

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers = request_headers(scope["headers"])
        cors = _raw(self.policy.cors.headers(headers.get("origin")))
        try:
            route = match(
                scope["method"], target, max_topics=self.limits.max_topics_per_subscription
            )
        except ClientError as error:
            if scope["method"] == "OPTIONS":
                preflight = self.policy.cors.preflight(headers.get("origin"))
                if preflight is not None:
                    await _answer(send, 204, b"", _raw(preflight))
                    return
            await _answer_error(send, error, cors)
            return
        if route is None and scope["method"] == "DELETE":
            try:
                self._admit_delete(target, headers)
            except ClientError as error:
                await _answer_error(send, error, cors)
                return
            if self.hub.store is not None:
                await self._administer(send, target, cors)
                return
        if route is None or route.kind == "ws":
            await self.app(scope, receive, send)
            return
        peer = (scope.get("client") or ("?",))[0]
        if route.kind == "sse":
            transport = AsgiSseTransport(scope, receive, send, route, cors)
            await open_stream(
                self.streams,
                transport,
                route,
                headers,
                peer=str(peer),
                remote=_client_address(scope),
                label="h2" if scope.get("http_version") == "2" else None,
            )
        else:
            await self._publish(receive, send, route, headers, cors, peer)

    async def _publish(
        self,
        receive: Any,
        send: Any,
        route: Route,
        headers: dict[str, str],
        cors: list[tuple[bytes, bytes]],
        peer: str,
    ) -> None:
        try:
            body = await _read_body(receive, self.limits.max_body_bytes)
            payload = await publish(self.hub, self.policy, route, headers, body, peer)
        except _ClientGone:
            return
        except ClientError as error:
            await _answer_error(send, error, cors)
            return
        await _answer_json(send, 202, payload, cors)

    def _admit_delete(self, target: str, headers: dict[str, str]) -> None:
        """Authorize ``DELETE /topics/{topic}[/retained]`` (auth on: publish claim or admin).

        Raises:
            ClientError: 401/403 (``policy.admit_admin``), 400 for a bad topic.
        """
        if not self.policy.auth.enabled:
            return
        path, query = split_target(target)
        if not path.startswith("/topics/"):
            return  # not topic administration: the app answers 404/405
        topic = unquote(path[len("/topics/") :])
        if topic.endswith("/retained"):
            topic = topic[: -len("/retained")]
        self.policy.admit_admin(
            headers, parse_qs(query, keep_blank_values=True), check_topic(topic)
        )

    async def _administer(self, send: Any, target: str, cors: list[tuple[bytes, bytes]]) -> None:
        """``DELETE /topics/{topic}[/retained]`` on a store: every node forgets, not one.

        (On the in-memory/mesh engine the app answers these from the node's own hub.)
        """
        store = self.hub.store
        assert store is not None
        path, query = split_target(target)
        if not path.startswith("/topics/"):
            await self._not_found(send, cors)
            return
        topic = unquote(path[len("/topics/") :])
        retained = topic.endswith("/retained")
        try:
            if retained:
                topic = check_topic(topic[: -len("/retained")])
                kinds = parse_qs(query, keep_blank_values=True).get("event")
                event_type = check_event_type(kinds[-1]) if kinds else ...
                cleared = await store.clear_retained(topic, event_type)
                payload: dict[str, Any] = {"topic": topic, "cleared": cleared}
            else:
                topic = check_topic(topic)
                payload = {"topic": topic, "forgotten": await store.forget(topic)}
        except ClientError as error:
            await _answer_error(send, error, cors)
            return
        await _answer_json(send, 200, payload, cors)

    async def _not_found(self, send: Any, cors: list[tuple[bytes, bytes]]) -> None:
        await _answer_error(send, NotFound("no such resource"), cors)


class AsgiSseTransport:
    """SSE on a connection hypercorn serves (a :class:`~.session.StreamTransport`)."""

    __slots__ = ("cors", "receive", "route", "scope", "send")
    kind = "sse"

    def __init__(
        self, scope: Scope, receive: Any, send: Any, route: Route, cors: list[tuple[bytes, bytes]]
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.route = route
        self.cors = cors

    async def refuse(self, error: ClientError) -> None:
        await _answer_error(self.send, error, self.cors)

    async def degrade(self, error: Unavailable, resume_from: str | None) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.cors}
        await self.send(start)
        notice = degraded_notice(self.route, error, resume_from)
        await self.send({"type": "http.response.body", "body": PREAMBLE + notice})

    async def over(self) -> bool:
        await self.send({"type": "http.response.start", "status": 204, "headers": self.cors})
        await self.send({"type": "http.response.body", "body": b""})
        return True

    async def accept(self) -> bytes | None:
        start = {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.cors}
        await self.send(start)
        await self.send({"type": "http.response.body", "body": PREAMBLE, "more_body": True})
        if self.scope["method"] == "HEAD":
            await self.send({"type": "http.response.body", "body": b""})
            return None
        return b""

    def sink(self) -> Sink:
        return AsgiSink(self.send)

    def codec(self) -> Codec:
        return SseCodec(envelope=self.route.flag("envelope"))

    async def serve(
        self, subscriber: Subscriber, nursery: trio.Nursery, identity: Identity
    ) -> None:
        # hypercorn's send() keeps succeeding after the client left; the disconnect message
        # is the only reliable signal.
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def finish(self, subscriber: Subscriber) -> None:
        if subscriber.end_reason != "gone":
            # The broker ended the stream (broker.end, shutdown, eviction): finish the
            # response, or the client sees a truncated body instead of a clean end.
            try:
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass


def request_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """An ASGI scope's headers as the data plane's parser gives them.

    Lowercased names; a repeated field joined with ``", "`` (``Cookie``, which HTTP/2 may
    split into several fields, with ``"; "``).
    """
    headers: dict[str, str] = {}
    for key, value in raw:
        name, text = key.decode("latin-1").lower(), value.decode("latin-1")
        if name in headers:
            text = headers[name] + ("; " if name == "cookie" else ", ") + text
        headers[name] = text
    return headers


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def _read_body(receive: Any, max_bytes: int) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body += message.get("body", b"")
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"body is over the limit of {max_bytes} bytes")
        if not message.get("more_body"):
            return bytes(body)


async def _answer_json(
    send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    await _answer(send, status, body, extra)


async def _answer_error(
    send: Any, error: ClientError, cors: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _answer(send, error.status, error.body(), _raw(error_headers(error)) + (cors or []))


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "?"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _raw(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def _answer(
    send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
