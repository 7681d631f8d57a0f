"""The admin API and page: who is slow, which topics are hot, how the cluster is doing.

Control plane only (hypercorn, the quart-trio app): nothing here runs per event. Every row
is computed when asked from state the hub keeps anyway: its subscriber registry (with the
transport, address and token subject each connection recorded when it opened), each
mailbox's depth and the enqueue time of its oldest undelivered frame (the lag), each
topic's publish count and one-minute buckets (``hub.state._Topic.note_publish``), and the
bytes each client's TCP acknowledged (``TCP_INFO``, read for the rows shown).

Routes (JSON unless said otherwise):

* ``GET /admin/api/connections?sort=lag|queue|dropped|age&limit=N``
* ``DELETE /admin/api/connections/{id}[?reason=…]``: the client gets ``broker.disconnected``
  with the reason and a long ``retry`` (:data:`DISCONNECT_RETRY_MS`, jittered) so a browser
  does not come straight back, then the stream ends.
* ``GET /admin/api/topics?sort=rate|subscribers|name&limit=N&prefix=P``
* ``GET /admin/api/cluster``: this node, its peers, per-origin replication delay, the engine.
* ``GET /admin/api/summary``: totals and the latest once-a-second sample.
* ``GET /admin/api/stream``: SSE: the last 15 minutes of samples (``event: history``), then
  one ``event: stats`` a second (``hub/statsfeed.py``).
* ``GET /admin/``: the page (``static/admin.*``), which uses the routes above.

Who may: a token whose claims carry ``"admin": true`` (header, cookie or, where allowed,
query, like every token), from anywhere; with auth off, only clients on loopback that came
through no proxy (no ``Forwarded``/``X-Forwarded-For``). Everyone else gets 401 (no usable
token) or 403, as ``{"error", "code"}`` JSON.
"""

from __future__ import annotations

import heapq
import ipaddress
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

import trio
from quart import Response, request, send_from_directory
from quart_trio import QuartTrio

from ..core.errors import BadRequest, ClientError, NotFound
from ..edge.asgi import SSE_HEADERS, AsgiSink, _answer_error
from ..edge.auth import Forbidden, Unauthorized, bearer_token
from ..edge.policy import Policy
from ..hub.statsfeed import STATS_TOPIC
from ..hub.subscriber import Subscriber
from ..wire.sse import PREAMBLE, SseCodec, encode_frame

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
STREAM_PATH: Final = "/admin/api/stream"
#: How long a disconnected client is asked to stay away (jittered, times 1 to 1.5): long enough that
#: a browser's EventSource does not come back in a tight loop.
DISCONNECT_RETRY_MS: Final = 60_000
#: How long a disconnected client has to take its notice before the connection is cut.
DISCONNECT_GRACE_SECONDS: Final = 2.0
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000
MAX_REASON_CHARS: Final = 200
CONNECTION_SORTS: Final = ("lag", "queue", "dropped", "age")
TOPIC_SORTS: Final = ("rate", "subscribers", "name")
#: Topics of a connection listed in full; past this the row says how many more.
MAX_TOPICS_LISTED: Final = 20


# -- who may ---------------------------------------------------------------------------


def admit(
    policy: Policy,
    headers: Mapping[str, str],
    query: Mapping[str, list[str]],
    client_host: str | None,
    *,
    changes_state: bool = False,
) -> None:
    """Allow an admin request, or raise.

    Args:
        headers: lower-case names.
        client_host: the peer's address as the socket saw it.
        changes_state: a ``DELETE`` (disconnect): a cookie token then needs an allowed
            ``Origin``, like every state change (``edge/policy.py``).

    Raises:
        Unauthorized: auth is on and there is no usable token.
        Forbidden: a valid token without ``admin: true``; with auth off, a client that is
            not on loopback or came through a proxy.
    """
    auth = policy.auth
    if not auth.enabled:
        if "forwarded" in headers or "x-forwarded-for" in headers:
            raise Forbidden(
                "auth is off: the admin API answers loopback clients only, not proxied ones"
            )
        if not _is_loopback(client_host):
            raise Forbidden(
                "auth is off: the admin API answers loopback clients only "
                "(configure [auth] and use a token with the claim admin: true)"
            )
        return
    token, from_cookie = bearer_token(
        headers, query, cookie=policy.cookie, query_token=policy.query_token
    )
    if not token:
        raise Unauthorized("the admin API needs a token: Authorization: Bearer <jwt>")
    identity = auth.identify(token, cookie=from_cookie)
    if not identity.admin:
        raise Forbidden("this token has no admin claim")
    if changes_state and identity.cookie:
        policy.check_cookie_origin(headers)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# -- the rows ----------------------------------------------------------------------------


class AdminView:
    """Computes the admin rows from a running server (``server.RunningServer``).

    Args:
        server: returns the running server (given lazily: the app is built first).
    """

    def __init__(self, server: Callable[[], Any]) -> None:
        self._server = server
        #: Per connection id: (trio time, bytes out) when last asked, for bytes/s.
        self._seen: dict[int, tuple[float, int]] = {}

    @property
    def hub(self) -> Any:
        return self._server().hub

    def connections(self, sort: str, limit: int) -> dict[str, Any]:
        """The ``limit`` first connections by ``sort``, slowest first (oldest for ``age``).

        One pass over the subscribers with a cheap key and a bounded heap: rows (the costly
        part) are built for the ``limit`` shown only, so a poll of a node with 10 000
        connections holds the event loop for milliseconds, not tens of them.
        """
        now = trio.current_time()
        subscribers = self.hub._subscribers
        key: Callable[[Subscriber], Any] = {
            "lag": lambda s: (s.lag(now), len(s.mailbox)),
            "queue": lambda s: (len(s.mailbox), s.mailbox.bytes),
            "dropped": lambda s: (s.mailbox.dropped, s.lag(now)),
            "age": lambda s: -s.opened_at,
        }[sort]
        chosen = heapq.nlargest(limit, subscribers, key=key)
        rows = [self._row(subscriber, now) for subscriber in chosen]
        # bytes/s is measured between calls, for the connections shown.
        self._seen = {r["id"]: (now, r["bytes_out"]) for r in rows if r["bytes_out"] is not None}
        return {"total": len(subscribers), "sort": sort, "connections": rows}

    def _row(self, subscriber: Subscriber, now: float) -> dict[str, Any]:
        mailbox = subscriber.mailbox
        age = max(0.0, time.time() - subscriber.opened_at)
        bytes_out = subscriber.bytes_out()
        previous = self._seen.get(subscriber.id)
        rate: float | None = None
        if bytes_out is not None and previous is not None and now - previous[0] > 0.2:
            rate = max(0.0, (bytes_out - previous[1]) / (now - previous[0]))
        elif bytes_out is not None and age > 0.2:
            rate = bytes_out / age
        topics = sorted(subscriber.topics)
        if subscriber.ended:
            state = "ended"
        elif subscriber.closing:
            state = "closing"
        elif subscriber.busy:
            state = "backlogged"
        else:
            state = "live"
        return {
            "id": subscriber.id,
            "transport": subscriber.transport,
            "remote": subscriber.remote,
            "subject": subscriber.subject,
            "topics": topics[:MAX_TOPICS_LISTED],
            "topic_count": len(topics),
            "connected_since": round(subscriber.opened_at, 3),
            "age_seconds": round(age, 3),
            "delivered": subscriber.delivered,
            "queue_events": len(mailbox),
            "queue_bytes": mailbox.bytes,
            "dropped": mailbox.dropped,
            "lag_seconds": round(subscriber.lag(now), 3),
            "bytes_out": bytes_out,
            "bytes_per_second": None if rate is None else round(rate, 1),
            "state": state,
        }

    def disconnect(self, connection_id: int, reason: str) -> dict[str, Any]:
        """Disconnect one client, telling it why. Raises NotFound."""
        for subscriber in self.hub._subscribers:
            if subscriber.id == connection_id:
                break
        else:
            raise NotFound(f"no connection {connection_id}")
        retry_ms = int(DISCONNECT_RETRY_MS * random.uniform(1.0, 1.5))
        codec = subscriber.codec
        position = subscriber.position
        notice = codec.notice(
            "broker.disconnected",
            position,
            {"reason": reason, "retry_ms": retry_ms, "position": position},
            retry_ms,
        )
        log.info("%s: disconnected by an operator (%s)", subscriber, reason)
        subscriber.disconnect(notice + codec.goodbye, DISCONNECT_GRACE_SECONDS)
        return {"id": connection_id, "disconnected": True, "retry_ms": retry_ms}

    def topics(self, sort: str, limit: int, prefix: str) -> dict[str, Any]:
        now = time.time()
        store = self._server().store
        rows = []
        for name, state in self.hub._topics.items():
            if name.startswith("$") or not name.startswith(prefix):
                continue
            rows.append(
                {
                    "name": name,
                    "subscribers": len(state.subscribers),
                    "rate": round(state.rate(now), 3),
                    "published": state.published,
                    "history_events": len(state.history.events),
                    "history_store": "redis" if store is not None else None,
                    "retained_types": sorted(t or "message" for t in state.retained),
                    "closed": state.final is not None,
                    "last_publish": round(state.last_published, 3)
                    if state.last_published
                    else None,
                }
            )
        key: Callable[[dict[str, Any]], Any] = {
            "rate": lambda r: (-r["rate"], -r["subscribers"], r["name"]),
            "subscribers": lambda r: (-r["subscribers"], -r["rate"], r["name"]),
            "name": lambda r: r["name"],
        }[sort]
        rows.sort(key=key)
        return {"total": len(rows), "sort": sort, "topics": rows[:limit]}

    def cluster(self) -> dict[str, Any]:
        server = self._server()
        hub = server.hub
        now = time.time()
        origins = [
            {
                "origin": origin,
                "seq": seq,
                "local": origin == hub.origin,
                "delay_seconds": round(hub.replication_delay[origin], 3)
                if origin in hub.replication_delay
                else None,
            }
            for origin, seq in sorted(hub.vector.items())
        ]
        answer: dict[str, Any] = {
            "node": hub.origin,
            "engine": "memory",
            "time": round(now, 3),
            "ready": not hub.closed,
            "origins": origins,
            "nodes": [],
            "store": None,
        }
        if server.cluster is not None:
            info = server.cluster.statistics()
            answer.update(
                engine="mesh",
                node=info.node,
                nodes=[asdict(peer) for peer in info.peers],
                replicated_in=info.replicated_in,
                replicated_out=info.replicated_out,
                held_back=info.held_back,
                lost=info.lost,
            )
        if server.store is not None:
            answer.update(engine="redis", store=asdict(server.store.statistics()))
        return answer

    def summary(self) -> dict[str, Any]:
        hub = self.hub
        stats = hub.statistics()
        samples = hub.stats_feed.samples
        return {
            "origin": stats.origin,
            "subscribers": stats.subscribers,
            "topics": stats.topics,
            "published": stats.published,
            "delivered": stats.delivered,
            "dropped": stats.dropped,
            "evicted": stats.evicted,
            "largest_queue_depth": stats.largest_queue_depth,
            "latest": samples[-1] if samples else None,
        }


def _limit(args: Mapping[str, str]) -> int:
    raw = args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _choice(args: Mapping[str, str], choices: tuple[str, ...]) -> str:
    value = args.get("sort", choices[0])
    if value not in choices:
        raise BadRequest(f"sort must be one of {', '.join(choices)}")
    return value


def _reason(args: Mapping[str, str]) -> str:
    reason = args.get("reason") or "disconnected by an operator"
    if len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        raise BadRequest(f"reason must be printable text of at most {MAX_REASON_CHARS} characters")
    return reason


def _json(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(
        body, status=status, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


# -- wiring ------------------------------------------------------------------------------


def install_admin(
    app: QuartTrio, asgi_app: Any, server: Callable[[], Any], policy: Policy
) -> AdminRoutes:
    """Add the admin routes to ``app``; return the ASGI app to serve in front of ``asgi_app``.

    Args:
        app: the quart-trio app (its own ``asgi_app`` answers ``/admin/`` pages and JSON).
        asgi_app: what serves everything else (the hot routes in front of the app).
        server: returns the running server.
        policy: who may (its authenticator, cookie and query-token settings).
    """
    view = AdminView(server)
    quart_asgi = app.asgi_app

    @app.before_request
    async def admin_only() -> Response | None:
        if not request.path.startswith("/admin/api/"):
            return None
        try:
            headers = {k.lower(): v for k, v in request.headers.items()}
            query = parse_qs(request.query_string.decode("latin-1"))
            admit(
                policy,
                headers,
                query,
                request.remote_addr,
                changes_state=request.method not in ("GET", "HEAD", "OPTIONS"),
            )
        except ClientError as error:
            return _json({"error": error.message, "code": error.code}, error.status)
        return None

    @app.get("/admin")
    async def admin_redirect() -> Response:
        return Response("", status=308, headers={"Location": "/admin/"})

    @app.get("/admin/")
    async def admin_page() -> Any:
        return await send_from_directory(STATIC_DIR, "admin.html")

    @app.get("/admin/<any('admin.js','admin.css'):name>")
    async def admin_asset(name: str) -> Any:
        return await send_from_directory(STATIC_DIR, name)

    @app.get("/admin/api/connections")
    async def connections() -> Response:
        try:
            sort = _choice(request.args, CONNECTION_SORTS)
            return _json(view.connections(sort, _limit(request.args)))
        except ClientError as error:
            return _json({"error": error.message, "code": error.code}, error.status)

    @app.delete("/admin/api/connections/<connection_id>")
    async def disconnect(connection_id: str) -> Response:
        try:
            if not connection_id.isdigit() or len(connection_id) > 18:
                raise BadRequest("a connection id is a positive whole number")
            return _json(view.disconnect(int(connection_id), _reason(request.args)), 202)
        except ClientError as error:
            return _json({"error": error.message, "code": error.code}, error.status)

    @app.get("/admin/api/topics")
    async def topics() -> Response:
        try:
            prefix = request.args.get("prefix", "")
            if len(prefix) > 200:
                raise BadRequest("prefix is longer than 200 characters")
            sort = _choice(request.args, TOPIC_SORTS)
            return _json(view.topics(sort, _limit(request.args), prefix))
        except ClientError as error:
            return _json({"error": error.message, "code": error.code}, error.status)

    @app.get("/admin/api/cluster")
    async def cluster() -> Response:
        return _json(view.cluster())

    @app.get("/admin/api/summary")
    async def summary() -> Response:
        return _json(view.summary())

    return AdminRoutes(asgi_app, quart_asgi, server, policy)


class AdminRoutes:
    """ASGI middleware: ``/admin`` to the app (past the hot routes), the stats stream here.

    Args:
        app: everything else.
        admin_app: the quart app's own ASGI callable.
        server: returns the running server.
        policy: who may.
    """

    def __init__(self, app: Any, admin_app: Any, server: Callable[[], Any], policy: Policy) -> None:
        self.app = app
        self.admin_app = admin_app
        self.server = server
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/admin"):
            await self.app(scope, receive, send)
        elif scope["path"] == STREAM_PATH and scope["method"] == "GET":
            await self._stream(scope, receive, send)
        else:
            await self.admin_app(scope, receive, send)

    async def _stream(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The once-a-second samples as SSE: the ring first, then live, until disconnect."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        client = scope.get("client")
        try:
            admit(self.policy, headers, query, client[0] if client else None)
        except ClientError as error:
            await _answer_error(send, error)
            return
        hub = self.server().hub
        if hub.closed:
            await _answer_error(send, NotFound("the broker is shutting down"))
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": PREAMBLE, "more_body": True})
        async with trio.open_nursery() as nursery:
            subscriber = Subscriber(
                sink=AsgiSink(send),
                codec=SseCodec(),
                nursery=nursery,
                cancel_scope=nursery.cancel_scope,
                position="",
                max_events=64,
                max_bytes=1 << 20,
                send_timeout=30.0,
                name=f"admin stream {client}",
                transport="admin",
                remote=f"{client[0]}:{client[1]}" if client else "?",
            )
            with watch_stats(hub, subscriber):
                while (await receive())["type"] != "http.disconnect":
                    pass
                subscriber.end("gone")
        if subscriber.end_reason != "gone":
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass


@contextmanager
def watch_stats(hub: Any, subscriber: Subscriber) -> Iterator[Subscriber]:
    """Register ``subscriber`` for the stats feed for the ``with`` block.

    In one synchronous step it gets the ring of past samples (``event: history``) and is
    registered for the live ones, so no sample falls between. It is in the hub's
    subscriber registry too: heartbeats, shutdown notices and the admin API see it.
    """
    feed = hub.stats_feed
    position = hub.position
    subscriber.topics = frozenset({STATS_TOPIC})
    subscriber.offer_notice(
        subscriber.codec.notice(
            "broker.start",
            position,
            {"position": position, "heartbeat_seconds": hub.heartbeat_seconds},
        ),
        position,
    )
    history = json.dumps(list(feed.samples), separators=(",", ":"))
    subscriber.send_control(encode_frame(position, "history", history))
    hub._subscribers[subscriber] = None
    feed.watchers[subscriber] = None
    if hub.closed:
        subscriber.close(hub._shutdown_notice(subscriber))
    try:
        yield subscriber
    finally:
        feed.watchers.pop(subscriber, None)
        hub._subscribers.pop(subscriber, None)
