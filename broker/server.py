"""The composition root: how a broker process starts, serves and stops.

Start: the soft limit of open files raised to the hard limit (every connection is a
descriptor), the hub (with its heartbeat task), the quart-trio app behind hypercorn (lifespan
started), then the public listener; readiness is reported with the bound URLs.

Shutdown, in this order and only here:
1. stop accepting connections;
2. ``hub.close()``: every subscriber gets a ``broker.shutdown`` notice (jittered
   ``retry:``) after what it has pending, and its stream ends;
3. kept-alive connections waiting for a request are closed (data plane and hypercorn);
4. what is still running gets ``grace_seconds`` before it is cancelled;
5. the app's lifespan shutdown runs; the hub's tasks end.
"""

from __future__ import annotations

import logging
import resource
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .cluster import Cluster, ClusterOptions, open_cluster
from .config import Settings
from .control.admin import install_admin
from .control.app import create_app
from .control.handoff import ControlPlane, server_ssl_context
from .control.metrics import make_registry
from .edge.asgi import HotRoutes
from .edge.auth import Authenticator
from .edge.cors import CorsPolicy
from .edge.dataplane import DataPlane
from .edge.limits import ConnectionLimiter, RateLimiter
from .edge.listener import Acceptor
from .edge.policy import Policy
from .edge.session import Limits, Streams
from .edge.wsconnection import WsOptions
from .hub import Hub, Journal, open_hub

if TYPE_CHECKING:
    from .engines.redis import RedisEngine

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """What :func:`serve` reports once it is serving.

    Attributes:
        urls: ``http://host:port`` for each bound address.
        hub: the node's hub.
        streams: what every stream shares, and the count of open streams.
        dataplane: the public listener's connection handler (connection counts).
        control: the hypercorn side.
        cluster: this node's mesh membership, if ``[cluster] enabled`` on the mesh engine.
        store: the Redis engine, if ``[cluster] engine = "redis"``.
    """

    urls: list[str]
    hub: Hub
    streams: Streams
    dataplane: DataPlane
    control: ControlPlane
    acceptor: Acceptor
    cluster: Cluster | None = None
    store: RedisEngine | None = None
    _shutdown: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def request_shutdown(self) -> None:
        """Begin the graceful shutdown (idempotent, callable from any task)."""
        self._shutdown.set()


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_body_bytes=settings.limits.max_body_bytes,
        max_head_bytes=settings.limits.max_head_bytes,
        idle_timeout=settings.limits.idle_timeout_seconds,
        head_timeout=settings.limits.head_timeout_seconds,
        min_body_rate=settings.limits.min_body_rate_bytes,
        queue_events=settings.stream.queue_events,
        queue_bytes=settings.stream.queue_bytes,
        send_timeout=settings.stream.send_timeout_seconds,
        max_topics_per_subscription=settings.limits.max_topics_per_subscription,
    )


def _url(sockname: Any) -> str:
    host, port = sockname[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    settings: Settings, *, task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run one broker until :meth:`RunningServer.request_shutdown` (or cancellation).

    Use as ``server = await nursery.start(serve, settings)``.
    """
    raise_open_files_limit(settings.limits.max_connections)
    limits = limits_from(settings)
    grace = settings.shutdown.grace_seconds
    clustered = settings.cluster.enabled and settings.cluster.engine == "mesh"
    async with (
        _maybe_journal(settings) as journal,
        open_hub(
            heartbeat_seconds=settings.stream.heartbeat_seconds,
            history_size=settings.history.size,
            retry_ms=settings.stream.retry_ms,
            log_size=settings.cluster.log_size if clustered else 0,
            journal=journal,
            topic_idle_seconds=settings.storage.topic_idle_seconds,
        ) as hub,
        _maybe_cluster(hub, settings) as cluster,
        _maybe_store(hub, settings) as store,
    ):
        running: RunningServer
        policy = policy_from(settings)
        app = create_app(
            hub,
            extra_stats=lambda: _connection_stats(running),
            metrics=make_registry(lambda: running),
        )
        catchup = settings.cluster.catchup_seconds if clustered else 0.0
        streams = Streams(hub, policy, limits, catchup_seconds=catchup)
        # Quart types asgi_app as its own method; the admin routes, then HotRoutes, are ASGI
        # callables in its place.
        hot = HotRoutes(app.asgi_app, streams)
        app.asgi_app = install_admin(  # type: ignore[method-assign,assignment]
            app, hot, lambda: running, policy
        )
        tls = settings.tls
        control = ControlPlane(
            app,
            keep_alive_timeout=settings.limits.idle_timeout_seconds,
            handshake_timeout=settings.limits.head_timeout_seconds,
            graceful_timeout=grace,
            ssl_context=server_ssl_context(tls.cert_file, tls.key_file) if tls.cert_file else None,
            faults=hub.faults,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(control.run)
            ws = settings.websocket
            ws_options = WsOptions(
                ping_interval=ws.ping_interval_seconds,
                ping_timeout=ws.ping_timeout_seconds,
                max_message_bytes=ws.max_message_bytes,
                allow_publish=ws.allow_publish,
            )
            dataplane = DataPlane(
                streams,
                control.serve,
                ws_options,
                handoff_tls=control.serve_tls if control.ssl_context else None,
            )
            nursery.start_soon(dataplane.sweep_idle)
            listeners = await _open_listeners(settings)
            acceptor = Acceptor(dataplane.handle_connection, make_room=dataplane.make_room)
            async with trio.open_nursery() as connections:
                accepting = trio.CancelScope()
                serve_listeners = partial(acceptor.serve, listeners, handler_nursery=connections)

                async def accept(*, task_status: trio.TaskStatus[Any]) -> None:
                    with accepting:
                        await serve_listeners(task_status=task_status)

                bound = await nursery.start(accept)
                urls = [_url(listener.socket.getsockname()) for listener in bound]
                running = RunningServer(
                    urls, hub, streams, dataplane, control, acceptor, cluster, store
                )
                for url in urls:
                    log.info("listening on %s (origin %s)", url, hub.origin)
                task_status.started(running)
                await running._shutdown.wait()

                log.info("shutting down: %d streams open", streams.statistics().open)
                accepting.cancel()
                hub.close()
                dataplane.close_idle()
                await control.stop_idle()
                connections.cancel_scope.deadline = trio.current_time() + grace
            nursery.cancel_scope.cancel()
    log.info("stopped")


def raise_open_files_limit(max_connections: int = 0) -> int:
    """Raise the soft limit of open files to the hard limit; log and return it.

    Each connection holds a descriptor: at a distribution's default soft limit (often 1024)
    a thousand idle sockets would stop the broker accepting anyone.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open files: cannot raise the soft limit %d to %d: %s", soft, hard, exc)
    log.info("open files: limit %d (hard %s)", soft, "unlimited" if hard < 0 else hard)
    if max_connections and soft < max_connections:
        log.warning(
            "open files: limit %d is below [limits] max_connections %d; accept fails beyond it",
            soft,
            max_connections,
        )
    return soft


def policy_from(settings: Settings) -> Policy:
    """The edge policy (auth, CORS, limits) from settings."""
    auth = settings.auth
    key = auth.secret
    if auth.public_key_file:
        with open(auth.public_key_file) as file:
            key = file.read()
    limits = settings.limits
    return Policy(
        auth=Authenticator(
            algorithm=auth.algorithm,
            key=key,
            anonymous_subscribe=auth.anonymous_subscribe,
            audience=auth.audience,
            issuer=auth.issuer,
            leeway_seconds=auth.leeway_seconds,
            require_exp=auth.require_exp,
        ),
        cors=CorsPolicy(settings.cors.allow_origins, settings.cors.allow_credentials),
        rate=RateLimiter(limits.publish_rate, limits.publish_burst),
        connections=ConnectionLimiter(limits.max_connections, limits.max_connections_per_ip),
        cookie=auth.cookie,
        query_token=auth.query_token,
    )


def _connection_stats(server: RunningServer) -> dict[str, Any]:
    accept = server.acceptor.statistics()
    stats: dict[str, Any] = {
        "connections": server.dataplane.statistics().connections,
        "streams": server.streams.statistics().open,
        "handed_off_connections": server.control.statistics().connections,
        "internal_errors": server.hub.faults.statistics(),
        "request_timeouts": server.dataplane.statistics().request_timeouts,
        "accept_failures": accept.failures,
        "connections_closed_for_room": server.dataplane.statistics().closed_for_room,
    }
    if server.cluster is not None:
        stats["cluster"] = asdict(server.cluster.statistics())
    if server.store is not None:
        stats["cluster"] = asdict(server.store.statistics())
    journal = server.hub.journal
    if journal is not None:
        stats["storage"] = asdict(journal.statistics())
    return stats


@asynccontextmanager
async def _maybe_journal(settings: Settings) -> AsyncIterator[Journal | None]:
    """The embedded durable store (``[storage] kind = "durable"``), unless Redis keeps the
    events. A cluster node keeps its store in ``path/<node_id>``, so the nodes that
    ``broker cluster`` starts on one machine never share one."""
    storage = settings.storage
    cluster = settings.cluster
    if storage.kind != "durable" or (cluster.enabled and cluster.engine == "redis"):
        yield None
        return
    from .engines.durable import JournalOptions, open_journal  # imports lmdb

    path = Path(storage.path)
    if cluster.enabled and cluster.node_id:
        path = path / cluster.node_id
    options = JournalOptions(
        path=str(path),
        durability=storage.durability,
        history_size=settings.history.size,
        max_age_seconds=storage.max_age_seconds,
        max_bytes=storage.max_bytes,
        closed_ttl_seconds=storage.closed_ttl_seconds,
        sweep_seconds=storage.sweep_seconds,
        boot_id_file=storage.boot_id_file,
    )
    async with open_journal(options) as journal:
        yield journal


@asynccontextmanager
async def _maybe_cluster(hub: Hub, settings: Settings) -> AsyncIterator[Cluster | None]:
    config = settings.cluster
    if not config.enabled or config.engine != "mesh":
        yield None
        return
    options = ClusterOptions(
        node_id=config.node_id or hub.origin,
        host=config.host,
        port=config.port,
        advertise=config.advertise,
        seeds=config.seeds,
        secret=config.secret.encode(),
        heartbeat_seconds=config.heartbeat_seconds,
        down_after_seconds=config.down_after_seconds,
        holdback_seconds=config.holdback_seconds,
        max_frame_bytes=config.max_frame_bytes,
        queue_frames=config.queue_frames,
        backoff_max_seconds=config.backoff_max_seconds,
        remove_after_seconds=config.remove_after_seconds,
        retire_after_seconds=config.retire_after_seconds,
        ack=config.ack,
        min_replicas=config.min_replicas,
        ack_timeout_seconds=config.ack_timeout_seconds,
        handshake_timeout=config.handshake_timeout_seconds,
        tls_cert=config.tls_cert,
        tls_key=config.tls_key,
        tls_ca=config.tls_ca,
    )
    async with open_cluster(hub, options) as cluster:
        log.info("cluster: node %s, peer link on %s", options.node_id, cluster.addr)
        yield cluster


@asynccontextmanager
async def _maybe_store(hub: Hub, settings: Settings) -> AsyncIterator[RedisEngine | None]:
    config = settings.cluster
    if not config.enabled or config.engine != "redis":
        yield None
        return
    from .engines.redis import RedisOptions, open_redis_engine  # imports coredis

    options = RedisOptions(
        url=config.redis_url,
        key_prefix=config.redis_key_prefix,
        history_size=settings.history.size,
        timeout_seconds=config.redis_timeout_seconds,
        backoff_max_seconds=config.backoff_max_seconds,
        idle_topic_seconds=config.redis_idle_topic_seconds,
        tls_ca_file=config.redis_tls_ca_file,
        tls_cert_file=config.redis_tls_cert_file,
        tls_key_file=config.redis_tls_key_file,
    )
    async with open_redis_engine(hub, options) as engine:
        yield engine


async def _open_listeners(settings: Settings) -> list[trio.SocketListener]:
    server = settings.server
    if not server.reuse_port:
        return await trio.open_tcp_listeners(server.port, host=server.host)
    # --workers: every worker binds the same port; the kernel spreads the connections.
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    await sock.bind((server.host, server.port))
    sock.listen(4096)
    return [trio.SocketListener(sock)]
