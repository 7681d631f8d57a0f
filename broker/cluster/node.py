"""The cluster: this node's peer listener, its links, membership and replication.

Everything runs in the cluster's own nursery (``open_cluster``): the peer listener, one
task per link (its reader and writer in the link's nursery), a dialer per address being
dialed, and one ticker that sends heartbeats (each carrying this node's vector, which is
also the anti-entropy digest), marks silent peers down and gives up stale gaps. Leaving
``open_cluster`` says goodbye to every peer and ends all of them.

One link per peer: if two nodes dial each other at once, both keep the link dialed by the
node with the smaller id, so both sides close the same duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from ..hub import Hub
from ..hub.events import Event
from . import frames
from .link import Hello, LinkBroken, LinkClosed, PeerLink, handshake
from .membership import Membership
from .replication import Replicator, ranges_to_send
from .tls import PeerTls, peer_tls

log = logging.getLogger(__name__)

#: Most events pushed to one peer per origin per heartbeat by anti-entropy.
PUSH_BATCH = 2000


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """``[cluster]`` settings the cluster uses."""

    node_id: str
    host: str = "127.0.0.1"
    port: int = 0
    advertise: str = ""
    seeds: tuple[str, ...] = ()
    secret: bytes = b""
    heartbeat_seconds: float = 1.0
    down_after_seconds: float = 5.0
    holdback_seconds: float = 2.0
    handshake_timeout: float = 5.0
    max_frame_bytes: int = frames.DEFAULT_MAX_FRAME_BYTES
    queue_frames: int = 10_000
    backoff_max_seconds: float = 10.0
    #: PEM files for mutual TLS on every peer link (all three, or none: plain TCP).
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""


def event_frame(event: Event) -> bytes:
    return frames.encode_event(
        origin=event.origin,
        seq=event.seq,
        topic=event.topic,
        event_type=event.event_type,
        data=event.data,
        is_json=event.is_json,
        published_at=event.published_at,
        retain=event.retain,
        final=event.final,
    )


class Cluster:
    """This node's membership in a cluster (see module docstring). Use :func:`open_cluster`."""

    def __init__(self, hub: Hub, options: ClusterOptions) -> None:
        self.hub = hub
        self.options = options
        self.tls: PeerTls | None = None
        if options.tls_cert or options.tls_key or options.tls_ca:
            self.tls = peer_tls(options.tls_cert, options.tls_key, options.tls_ca)
        self.links: dict[str, PeerLink] = {}
        self.isolated: set[str] = set()
        self.addr = options.advertise
        self.membership = Membership(
            options.node_id,
            self.addr,
            list(options.seeds),
            down_after=options.down_after_seconds,
            backoff_max=options.backoff_max_seconds,
        )
        self.replicator = Replicator(
            hub.vector,
            self._deliver,
            hub.skip_remote,
            holdback_seconds=options.holdback_seconds,
        )
        self._nursery: trio.Nursery | None = None
        self.replicated_out = 0
        self.rejected_links = 0
        self.own = Hello(options.node_id, hub.origin, self.addr)

    def __str__(self) -> str:
        return f"node {self.options.node_id}"

    # -- events ---------------------------------------------------------------------------

    def _deliver(self, frame: dict[str, Any]) -> None:
        self.hub.deliver_remote(
            origin=frame["o"],
            seq=frame["s"],
            topic=frame["tp"],
            data=frame["d"],
            event_type=frame["e"],
            is_json=frame["j"],
            published_at=float(frame["ts"]),
            retain=frame["r"],
            final=frame["f"],
        )

    def on_local_event(self, event: Event) -> None:
        """Hub listener: send an event published here to every peer (encoded once)."""
        if not self.links:
            return
        frame = event_frame(event)
        for link in self.links.values():
            if link.send_nowait(frame):
                link.sent[event.origin] = event.seq
                self.replicated_out += 1

    # -- links ----------------------------------------------------------------------------

    async def _serve_inbound(self, stream: trio.SocketStream) -> None:
        try:
            host, port, *_ = stream.socket.getpeername()
            addr = f"{host}:{port}"
        except OSError:
            addr = "inbound"
        await self._run_link(stream, dialed=False, addr=addr)

    async def _dial(self, addr: str) -> None:
        host, _, port = addr.rpartition(":")
        try:
            with trio.fail_after(self.options.handshake_timeout):
                stream = await trio.open_tcp_stream(host, int(port))
        except (OSError, trio.TooSlowError, ValueError, OverflowError) as exc:
            log.debug("%s: cannot reach %s: %s", self, addr, exc)
            self.membership.dial_failed(addr, trio.current_time())
            return
        await self._run_link(stream, dialed=True, addr=addr)

    async def _secure(self, stream: trio.abc.Stream, *, dialed: bool, addr: str) -> trio.abc.Stream:
        """Wrap ``stream`` in TLS when configured and finish the TLS handshake."""
        if self.tls is None:
            return stream
        if dialed:
            host = addr.rpartition(":")[0].strip("[]")
            secure = trio.SSLStream(stream, self.tls.client, server_hostname=host)
        else:
            secure = trio.SSLStream(stream, self.tls.server, server_side=True)
        try:
            await secure.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise LinkBroken(f"TLS handshake failed: {exc.__cause__ or exc}") from None
        return secure

    async def _run_link(self, stream: trio.abc.Stream, *, dialed: bool, addr: str) -> None:
        options = self.options
        decoder = frames.FrameDecoder(options.max_frame_bytes)
        timeout = options.handshake_timeout
        try:
            # One deadline for TLS and the peer handshake: a peer that never finishes
            # either is dropped after handshake_timeout.
            with trio.move_on_after(timeout) as timer:
                stream = await self._secure(stream, dialed=dialed, addr=addr)
                peer, first = await handshake(
                    stream, decoder, self.own, options.secret, dialer=dialed, timeout=timeout
                )
            if timer.cancelled_caught:
                raise LinkBroken("handshake timed out")
        except LinkBroken as exc:
            log.warning("%s: link %s %s refused: %s", self, "to" if dialed else "from", addr, exc)
            self.rejected_links += 1
            if dialed:
                self.membership.dial_failed(addr, trio.current_time())
            await trio.aclose_forcefully(stream)
            return
        if dialed:
            self.membership.dialing.discard(addr)
        if peer.node == options.node_id or peer.node in self.isolated:
            await trio.aclose_forcefully(stream)
            if dialed:
                self.membership.dial_failed(addr, trio.current_time())
            return
        link = PeerLink(
            stream, peer, dialed=dialed, decoder=decoder, queue_frames=options.queue_frames
        )
        existing = self.links.get(peer.node)
        if existing is not None:
            keep_new = self._dialer(link) < self._dialer(existing)
            if not keep_new:
                await trio.aclose_forcefully(stream)
                return
            existing.close()
        self.links[peer.node] = link
        now = trio.current_time()
        self.membership.linked(peer.node, peer.addr, now)
        log.info("%s: linked to %s at %s (origin %s)", self, peer.node, peer.addr, peer.origin)
        self._greet(link)
        try:
            await link.run(self._on_frame, first)
        except LinkClosed:
            log.info("%s: closed the link to %s", self, peer.node)
        except LinkBroken as exc:
            log.warning("%s: link to %s ended: %s", self, peer.node, exc)
        finally:
            if self.links.get(peer.node) is link:
                del self.links[peer.node]
                self.membership.unlinked(peer.node, trio.current_time())

    def _dialer(self, link: PeerLink) -> str:
        return self.options.node_id if link.dialed else link.peer.node

    def _greet(self, link: PeerLink) -> None:
        link.send_nowait(frames.encode({"t": "members", "peers": self.membership.gossip()}))
        link.send_nowait(frames.encode({"t": "hb", "v": dict(self.hub.vector)}))

    def _on_frame(self, link: PeerLink, frame: dict[str, Any]) -> None:
        now = trio.current_time()
        self.membership.seen(link.peer.node, now)
        kind = frame["t"]
        if kind == "ev":
            self.replicator.receive(frame, now)
        elif kind == "hb":
            link.previous_peer_vector = link.peer_vector
            link.peer_vector = frame["v"]
            self._push_missing(link)
        elif kind == "members":
            self.membership.learn(frame["peers"], now)
        elif kind == "gap":
            self.replicator.gap_hint(frame["o"], frame["to"], now)

    def _push_missing(self, link: PeerLink) -> None:
        plan = ranges_to_send(
            self.hub.vector, link.peer_vector, link.sent, link.previous_peer_vector
        )
        for origin, after in plan:
            events, first_available = self.hub.log_after(origin, after, PUSH_BATCH)
            if first_available > after + 1:
                link.send_nowait(
                    frames.encode({"t": "gap", "o": origin, "to": first_available - 1})
                )
            for event in events:
                if not link.send_nowait(event_frame(event)):
                    break
                link.sent[origin] = event.seq

    # -- running --------------------------------------------------------------------------

    async def _ticker(self) -> None:
        options = self.options
        assert self._nursery is not None
        while True:
            now = trio.current_time()
            for node in self.membership.silent(now):
                link = self.links.get(node)
                if link is not None:
                    log.warning(
                        "%s: %s silent for %.1f s, marked down",
                        self,
                        node,
                        options.down_after_seconds,
                    )
                    link.close()
            self.replicator.expire(now)
            heartbeat = frames.encode({"t": "hb", "v": dict(self.hub.vector)})
            members = frames.encode({"t": "members", "peers": self.membership.gossip()})
            for link in list(self.links.values()):
                link.send_nowait(heartbeat)
                link.send_nowait(members)
            for addr in self.membership.dial_targets(now):
                self._nursery.start_soon(self._dial, addr)
            await trio.sleep(options.heartbeat_seconds)

    def isolate(self, node: str) -> None:
        """Cut this node off from ``node`` until :meth:`heal` (fault injection, operations)."""
        self.isolated.add(node)
        link = self.links.get(node)
        if link is not None:
            link.close()

    def heal(self, node: str) -> None:
        self.isolated.discard(node)

    def statistics(self) -> dict[str, Any]:
        """The cluster part of ``/stats``."""
        now = trio.current_time()
        peers = []
        for member in self.membership.members.values():
            link = self.links.get(member.node)
            entry: dict[str, Any] = {
                "node": member.node,
                "addr": member.addr,
                "state": "up" if link is not None else "down",
                "last_seen_seconds_ago": round(now - member.last_seen, 3)
                if member.last_seen
                else None,
            }
            if link is not None:
                lag = sum(
                    max(0, seq - link.peer_vector.get(origin, 0))
                    for origin, seq in self.hub.vector.items()
                )
                entry.update(
                    origin=link.peer.origin,
                    send_queue=link.queued,
                    frames_in=link.frames_in,
                    frames_out=link.frames_out,
                    dropped_frames=link.dropped,
                    lag_events=lag,
                )
            peers.append(entry)
        return {
            "node": self.options.node_id,
            "peer_addr": self.addr,
            "peers": sorted(peers, key=lambda p: p["node"]),
            "replicated_in": self.hub.replicated_in,
            "replicated_out": self.replicated_out,
            "held_back": self.replicator.held,
            "duplicates": self.replicator.duplicates,
            "lost": self.hub.lost,
            "rejected_links": self.rejected_links,
        }


@asynccontextmanager
async def open_cluster(hub: Hub, options: ClusterOptions) -> AsyncIterator[Cluster]:
    """Join ``hub`` to a cluster; the peer listener is bound when this yields.

    On exit every link is closed and every cluster task has ended.
    """
    if not options.secret:
        raise ValueError("a cluster needs a shared secret")
    cluster = Cluster(hub, options)
    listeners = await trio.open_tcp_listeners(options.port, host=options.host)
    sockname = listeners[0].socket.getsockname()
    if not cluster.addr:
        cluster.addr = f"{options.host}:{sockname[1]}"
        cluster.membership.addr = cluster.addr
        cluster.own = Hello(options.node_id, hub.origin, cluster.addr)
    hub.listeners.append(cluster.on_local_event)
    try:
        async with trio.open_nursery() as nursery:
            cluster._nursery = nursery
            await nursery.start(trio.serve_listeners, cluster._serve_inbound, listeners)
            nursery.start_soon(cluster._ticker)
            try:
                yield cluster
            finally:
                bye = frames.encode({"t": "bye"})
                for link in list(cluster.links.values()):
                    link.send_nowait(bye)
                with trio.CancelScope(shield=True):
                    await trio.sleep(0.05)  # let the writers flush the goodbyes
                nursery.cancel_scope.cancel()
    finally:
        hub.listeners.remove(cluster.on_local_event)
