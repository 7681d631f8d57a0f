"""The control plane: hypercorn serving the quart-trio app on handed-over connections.

The data plane accepts every connection; a connection whose request is not hot (pages,
``/stats``, ``/metrics``, anything over TLS or HTTP/2) is passed here with the bytes already
read. WebSocket upgrades for ``/topics/.../ws`` stay on the data plane (``edge/wsconnection``).
hypercorn's trio ``TCPServer`` takes any stream object with ``receive_some``/``send_all``
and a ``socket`` attribute, so :class:`PrefixedStream` replays the read bytes first.

This uses hypercorn's internal ``TCPServer``, ``Lifespan`` and ``WorkerContext`` (pinned to
hypercorn 0.18 in pyproject.toml; covered by tests/integration/test_http2.py and by every
test of a page, ``/stats`` or ``/metrics``); the ASGI lifespan is run here the way
``hypercorn.trio.run.worker_serve`` does it.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

log = logging.getLogger(__name__)


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first reads return bytes that were already received."""

    def __init__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        self.transport_stream = stream
        self.socket = stream.socket
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.transport_stream.send_eof()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()


@dataclass(frozen=True, slots=True)
class ControlPlaneStatistics:
    """Connections hypercorn serves now (handed over by the data plane)."""

    connections: int


class ControlPlane:
    """Runs the ASGI app's lifespan and serves handed-over connections with hypercorn.

    Args:
        asgi_app: the application (the quart-trio app with the hot-route middleware).
        keep_alive_timeout: seconds an idle kept-alive connection stays open.
        handshake_timeout: seconds a TLS handshake may take.
        graceful_timeout: seconds requests get to finish at shutdown.
        ssl_context: for TLS connections (HTTP/2 by ALPN); ``None`` refuses TLS.
    """

    def __init__(
        self,
        asgi_app: Any,
        *,
        keep_alive_timeout: float = 60.0,
        handshake_timeout: float = 10.0,
        graceful_timeout: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        config = Config()
        config.keep_alive_timeout = keep_alive_timeout
        config.ssl_handshake_timeout = handshake_timeout
        config.graceful_timeout = graceful_timeout
        config.accesslog = None
        config.errorlog = logging.getLogger("broker.hypercorn")
        self.config = config
        self.app = ASGIWrapper(asgi_app)
        self.context = WorkerContext(None)
        self.state: dict[str, Any] = {}
        self.connections = 0

    def statistics(self) -> ControlPlaneStatistics:
        return ControlPlaneStatistics(connections=self.connections)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the app's lifespan: startup, report ready, and shutdown when cancelled."""
        lifespan = Lifespan(self.app, self.config, self.state)
        async with trio.open_nursery() as nursery:
            await nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.move_on_after(self.config.graceful_timeout, shield=True):
                    await self.context.terminated.set()
                    await lifespan.wait_for_shutdown()
                nursery.cancel_scope.cancel()

    async def stop_idle(self) -> None:
        """Ask hypercorn to close kept-alive connections that are idle (shutdown)."""
        await self.context.terminated.set()

    async def serve_tls(self, stream: trio.SocketStream, already_read: bytes) -> None:
        """Serve a TLS connection (HTTP/1.1 or HTTP/2 by ALPN); its hello was already read."""
        assert self.ssl_context is not None
        tls = trio.SSLStream(
            PrefixedStream(stream, already_read),
            self.ssl_context,
            server_side=True,
            https_compatible=True,
        )
        await self._serve_stream(tls)

    async def serve(self, stream: trio.SocketStream, already_read: bytes) -> None:
        """Serve the rest of a connection; ``already_read`` are its first bytes."""
        await self._serve_stream(PrefixedStream(stream, already_read))

    async def _serve_stream(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        try:
            server = TCPServer(
                self.app,
                self.config,
                self.context,
                ConnectionState(self.state.copy()),
                stream,  # type: ignore[arg-type]  # a replaying stream, duck-typed as a SocketStream
            )
            await server.run()
        finally:
            self.connections -= 1


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS 1.2+ with ALPN offering HTTP/2 first, then HTTP/1.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context
