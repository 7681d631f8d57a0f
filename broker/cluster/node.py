"""The cluster: this node's peer listener, its links, membership and replication.

Everything runs in the cluster's own nursery (``open_cluster``): the peer listener, one
task per link (its reader and writer in the link's nursery), a dialer per address being
dialed, one ticker that sends heartbeats (each carrying this node's catch-up digest: its
vector and the lowest seq it holds per origin), marks silent peers down, removes members
gone for good and retires origins nobody uses, and one task that sends ``ack`` frames
(replicated acknowledgement). Leaving ``open_cluster`` says goodbye to every peer and ends
all of them.

Catch-up is pulled (``catchup.py`` decides, this module sends): every digest, every
answered page and every tick re-plans; a ``pull`` is answered from the replication log
with the events and a ``page`` frame, which triggers the next request.

Fault isolation: each link's task runs under :func:`~broker.core.guard.guard`; an unexpected
exception (in the handshake, a frame handler, the writer) is logged and counted
(``where="peer"``) and closes that link alone; the node dials again with backoff.

One link per peer: if two nodes dial each other at once, both keep the link dialed by the
node with the smaller id, so both sides close the same duplicate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio

from ..core.guard import guard
from ..hub import Hub
from ..hub.engine import NotReplicated
from ..hub.events import Event
from . import frames
from .catchup import CatchUp, Gap, Pull
from .link import Hello, LinkBroken, LinkClosed, PeerLink, handshake
from .membership import Membership
from .replication import Replicator
from .tls import PeerTls, peer_tls

log = logging.getLogger(__name__)

#: Longest a shutdown waits for the links to write their queues and "bye".
GOODBYE_SECONDS: Final = 0.5

#: Most events one ``pull`` is answered with, whatever it asks for.
MAX_PAGE_EVENTS = 5000


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
    remove_after_seconds: float = 300.0
    retire_after_seconds: float = 600.0
    ack: str = "local"
    min_replicas: int = 1
    ack_timeout_seconds: float = 5.0
    #: PEM files for mutual TLS on every peer link (all three, or none: plain TCP).
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""


def event_frame(event: Event, *, ack: bool = False) -> bytes:
    return frames.encode_event(
        ack=ack,
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
            remove_after=options.remove_after_seconds,
            tombstone_seconds=max(3600.0, 2 * options.remove_after_seconds),
            retire_after=options.retire_after_seconds,
            origin=hub.origin,
        )
        self.replicator = Replicator(
            hub.vector, self._deliver, hub.skip_remote, retired=hub.retired
        )
        self.catchup = CatchUp(
            stall_seconds=max(options.holdback_seconds, 2 * options.heartbeat_seconds),
            gap_grace_seconds=options.holdback_seconds,
            patience_seconds=options.heartbeat_seconds,
            retired=hub.retired,
        )
        self._nursery: trio.Nursery | None = None
        #: Replicated acknowledgement: per peer node, the highest seq of this node's origin
        #: it delivered; the origins whose senders are owed an ``ack`` frame.
        self.acked: dict[str, int] = {}
        self._acked_changed = trio.Event()
        self._ack_due: set[str] = set()
        self._ack_wake = trio.Event()
        self._ack_wanted = False
        self.default_ack = options.ack
        self.not_replicated = 0
        self.links_opened = 0
        #: Origins this node retired lately, said in its heartbeats (membership.py).
        self._retired_at: dict[str, float] = {}
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
        frame = event_frame(event, ack=self._ack_wanted)
        for link in self.links.values():
            if link.send_nowait(frame):
                self.replicated_out += 1

    # -- links ----------------------------------------------------------------------------

    async def _serve_inbound(self, stream: trio.SocketStream) -> None:
        try:
            host, port, *_ = stream.socket.getpeername()
            addr = f"{host}:{port}"
        except OSError:
            addr = "inbound"
        await self._guarded_link(stream, dialed=False, addr=addr)

    async def _dial(self, addr: str) -> None:
        host, _, port = addr.rpartition(":")
        try:
            with trio.fail_after(self.options.handshake_timeout):
                stream = await trio.open_tcp_stream(host, int(port))
        except (OSError, trio.TooSlowError, ValueError, OverflowError) as exc:
            log.debug("%s: cannot reach %s: %s", self, addr, exc)
            self.membership.dial_failed(addr, trio.current_time())
            return
        await self._guarded_link(stream, dialed=True, addr=addr)

    async def _guarded_link(self, stream: trio.SocketStream, *, dialed: bool, addr: str) -> None:
        """:meth:`_run_link` under the guard: a fault closes this link alone."""
        with guard(
            self.hub.faults, "peer", f"{self} link {'to' if dialed else 'from'} {addr}"
        ) as fault:
            await self._run_link(stream, dialed=dialed, addr=addr)
        if fault:
            await trio.aclose_forcefully(stream)
            if dialed and addr in self.membership.dialing:
                self.membership.dial_failed(addr, trio.current_time())

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
        self.links_opened += 1
        if existing is None or existing.peer.origin != peer.origin:
            self.acked.pop(peer.node, None)  # a new incarnation holds nothing it acked
        now = trio.current_time()
        self.membership.linked(peer.node, peer.addr, now, peer.origin)
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
                self.catchup.peer_gone(peer.node)

    def _dialer(self, link: PeerLink) -> str:
        return self.options.node_id if link.dialed else link.peer.node

    def _greet(self, link: PeerLink) -> None:
        link.send_nowait(self._members())
        link.send_nowait(self._heartbeat())

    def _members(self) -> bytes:
        membership = self.membership
        frame: dict[str, Any] = {
            "t": "members",
            "peers": membership.gossip(),
            "origins": membership.gossip_origins(),
        }
        gone = membership.gossip_gone()
        if gone:
            frame["gone"] = gone
        return frames.encode(frame)

    def _heartbeat(self) -> bytes:
        frame: dict[str, Any] = {"t": "hb", "v": dict(self.hub.vector)}
        low = self.hub.holdings()
        if low:
            frame["lo"] = low
        if self._retired_at:
            frame["ret"] = list(self._retired_at)
        return frames.encode(frame)

    def _on_frame(self, link: PeerLink, frame: dict[str, Any]) -> None:
        now = trio.current_time()
        node = link.peer.node
        self.membership.seen(node, now)
        kind = frame["t"]
        if kind == "ev":
            if self.replicator.receive(frame) and frame.get("a"):
                self._ack_due.add(frame["o"])
                self._ack_wake.set()
        elif kind == "ack":
            if frame["o"] == self.hub.origin:
                self._acked(node, frame["s"])
        elif kind == "hb":
            link.peer_vector = frame["v"]
            self._acked(node, frame["v"].get(self.hub.origin, 0))
            for origin in frame.get("ret", ()):
                if origin in self.hub.vector and self.membership.may_retire(origin):
                    self._retire_origin(origin, now)
            self.catchup.digest(node, frame["v"], frame.get("lo", {}), now)
            self._catch_up(now)
        elif kind == "pull":
            self._serve_pull(link, frame)
        elif kind == "page":
            self.catchup.answered(
                node,
                frame["o"],
                frame["after"],
                frame["n"],
                frame["to"],
                frame["lo"],
                now,
                frame.get("tp"),
            )
            self._catch_up(now)
        elif kind == "members":
            self.membership.learn(frame["peers"], now, frame.get("origins"), frame.get("gone"))

    # -- replicated acknowledgement --------------------------------------------------------

    def _acked(self, node: str, seq: int) -> None:
        if seq > self.acked.get(node, 0):
            self.acked[node] = seq
            self._acked_changed.set()
            self._acked_changed = trio.Event()

    async def _ack_task(self) -> None:
        """Tell each origin how far this node has delivered it: one frame per wake-up.

        Woken by deliveries; by the time it runs, the reader has applied every frame of its
        last read, so acknowledgements are batched without a timer.
        """
        while True:
            await self._ack_wake.wait()
            self._ack_wake = trio.Event()
            due, self._ack_due = self._ack_due, set()
            vector = self.hub.vector
            for link in list(self.links.values()):
                origin = link.peer.origin
                delivered = vector.get(origin, 0)  # 0: only held back so far
                if origin in due and delivered:
                    link.send_nowait(frames.encode({"t": "ack", "o": origin, "s": delivered}))

    def check_replicas(self) -> None:
        """Refuse a replicated publish before storing it when too few peers are linked."""
        wanted = self.options.min_replicas
        # The events published next (this request's) ask their receivers for an ack; with
        # ack = local nobody asks, and peers send none (heartbeats carry the same, later).
        self._ack_wanted = True
        if len(self.links) < wanted:
            self.not_replicated += 1
            raise NotReplicated(
                f"ack=replicated needs {wanted} linked peer(s), {len(self.links)} linked",
                self.options.heartbeat_seconds,
            )

    async def confirm(self, seq: int) -> None:
        """Wait until ``min_replicas`` peers delivered this node's events up to ``seq``."""
        wanted = self.options.min_replicas
        self._ack_wanted = False
        with trio.move_on_after(self.options.ack_timeout_seconds):
            while sum(1 for acked in self.acked.values() if acked >= seq) < wanted:
                await self._acked_changed.wait()
            return
        self.not_replicated += 1
        raise NotReplicated(
            f"stored here, but not confirmed by {wanted} peer(s) within "
            f"{self.options.ack_timeout_seconds} s; it may still replicate",
            self.options.heartbeat_seconds,
        )

    # -- catch-up -------------------------------------------------------------------------

    def _catch_up(self, now: float) -> None:
        """Carry out what the catch-up planner decides now."""
        links = self.links
        # Reachable means linked and its digest in: a link that just came up has not said
        # yet what it holds, and a gap decided in that moment would lose what it has.
        digests = self.catchup.peers
        everyone = all(node in links and node in digests for node in self.membership.members)
        plan = self.catchup.plan(
            self.hub.vector, self.replicator.held_from(), now, everyone_reachable=everyone
        )
        for action in plan:
            if isinstance(action, Pull):
                link = self.links.get(action.peer)
                if link is not None:
                    link.send_nowait(
                        frames.encode(
                            {
                                "t": "pull",
                                "o": action.origin,
                                "after": action.after,
                                "n": action.count,
                            }
                        )
                    )
            elif isinstance(action, Gap):
                topics = None if action.topics is None else list(action.topics)
                self.hub.skip_remote(action.origin, action.up_to, topics)
                self.replicator.skip_to(action.origin, action.up_to)

    def _serve_pull(self, link: PeerLink, frame: dict[str, Any]) -> None:
        """Answer a peer's ``pull`` from the replication log: its events, then ``page``."""
        origin, after = frame["o"], frame["after"]
        count = min(frame["n"], MAX_PAGE_EVENTS)
        events, first = self.hub.log_after(origin, after, count)
        to = after
        for event in events:
            if event.seq != to + 1 or not link.send_nowait(event_frame(event)):
                break
            to = event.seq
        answer: dict[str, Any] = {
            "t": "page",
            "o": origin,
            "after": after,
            "n": count,
            "to": to,
            "lo": first,
        }
        if after + 1 < first:
            topics = self.hub.lost_topics(origin, after, first)
            if topics is not None:
                answer["tp"] = topics
        link.send_nowait(frames.encode(answer))

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
            for node in self.membership.expire(now):
                log.warning(
                    "%s: removed member %s: unseen for %.0f s",
                    self,
                    node,
                    options.remove_after_seconds,
                )
            self._retire(now)
            self._catch_up(now)
            heartbeat = self._heartbeat()
            members = self._members()
            for link in list(self.links.values()):
                link.send_nowait(heartbeat)
                link.send_nowait(members)
            for addr in self.membership.dial_targets(now):
                self._nursery.start_soon(self._dial, addr)
            await trio.sleep(options.heartbeat_seconds)

    def _retire(self, now: float) -> None:
        """Take origins no member uses any more out of the vector (bounded ids)."""
        hub = self.hub
        last_event = {o: hub.last_published_at(o) for o in hub.vector if o != hub.origin}
        if hub.journal is not None:
            # On a durable store an origin's events may be in the store only (a restart
            # loads topics when asked): none held in memory is no age at all. Such an origin
            # retires when a peer that knows its age says so (heartbeat "ret").
            last_event = {o: at for o, at in last_event.items() if at is not None}
        for origin in self.membership.retirable(last_event, time.time()):
            self._retire_origin(origin, now)
        hub.retiring = self.membership.retiring()
        horizon = now - self.options.retire_after_seconds
        for origin in [o for o, at in self._retired_at.items() if at < horizon]:
            del self._retired_at[origin]

    def _retire_origin(self, origin: str, now: float) -> None:
        self.hub.retire_origin(origin)
        self.replicator.forget(origin)
        self.catchup.forget([origin])
        self._retired_at[origin] = now

    def isolate(self, node: str) -> None:
        """Cut this node off from ``node`` until :meth:`heal` (fault injection, operations)."""
        self.isolated.add(node)
        link = self.links.get(node)
        if link is not None:
            link.close()

    def heal(self, node: str) -> None:
        self.isolated.discard(node)

    def statistics(self) -> ClusterStatistics:
        """The cluster part of ``/stats``, ``/metrics`` and the admin API."""
        now = trio.current_time()
        peers = []
        for member in self.membership.members.values():
            link = self.links.get(member.node)
            seen = round(now - member.last_seen, 3) if member.last_seen else None
            if link is None:
                peers.append(PeerStatistics(member.node, member.addr, "down", seen))
                continue
            lag = sum(
                max(0, seq - link.peer_vector.get(origin, 0))
                for origin, seq in self.hub.vector.items()
            )
            peers.append(
                PeerStatistics(
                    member.node,
                    member.addr,
                    "up",
                    seen,
                    origin=link.peer.origin,
                    send_queue=link.queued,
                    frames_in=link.frames_in,
                    frames_out=link.frames_out,
                    dropped_frames=link.dropped,
                    lag_events=lag,
                )
            )
        catchup = self.catchup
        return ClusterStatistics(
            node=self.options.node_id,
            peer_addr=self.addr,
            peers=tuple(sorted(peers, key=lambda p: p.node)),
            replicated_in=self.hub.replicated_in,
            replicated_out=self.replicated_out,
            held_back=self.replicator.held,
            catchup=CatchupStatistics(
                pulling=tuple(catchup.active()),
                pulls=catchup.pulls,
                pages=catchup.pages,
                stalls=catchup.stalls,
                gaps=catchup.gaps,
            ),
            duplicates=self.replicator.duplicates,
            lost=self.hub.lost,
            rejected_links=self.rejected_links,
            links_opened=self.links_opened,
            removed_members=self.membership.removed,
            pauses=self.membership.pauses,
            retired_origins=len(self.hub.retired),
            ack=self.default_ack,
            not_replicated=self.not_replicated,
        )


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """One member as this node sees it; the link's figures only while it is up."""

    node: str
    addr: str
    state: str
    last_seen_seconds_ago: float | None
    origin: str | None = None
    send_queue: int | None = None
    frames_in: int | None = None
    frames_out: int | None = None
    dropped_frames: int | None = None
    lag_events: int | None = None


@dataclass(frozen=True, slots=True)
class CatchupStatistics:
    """Pull-based catch-up (``catchup.py``): origins being pulled, and what it did."""

    pulling: tuple[str, ...]
    pulls: int
    pages: int
    stalls: int
    gaps: int


@dataclass(frozen=True, slots=True)
class ClusterStatistics:
    """A snapshot of this node's part of the mesh."""

    node: str
    peer_addr: str
    peers: tuple[PeerStatistics, ...]
    replicated_in: int
    replicated_out: int
    held_back: int
    catchup: CatchupStatistics
    duplicates: int
    lost: int
    rejected_links: int
    links_opened: int
    removed_members: int
    pauses: int
    retired_origins: int
    ack: str
    not_replicated: int


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
            nursery.start_soon(cluster._ack_task)
            hub.acknowledger = cluster
            try:
                yield cluster
            finally:
                # Each link sends what it has queued and then "bye", so peers mark this node
                # gone at once instead of after a silence; bounded, so a stuck peer cannot
                # hold up the shutdown.
                bye = frames.encode({"t": "bye"})
                links = list(cluster.links.values())
                for link in links:
                    link.finish(bye)
                with trio.move_on_after(GOODBYE_SECONDS, shield=True):
                    for link in links:
                        await link.wait_flushed()
                nursery.cancel_scope.cancel()
    finally:
        hub.acknowledger = None
        hub.listeners.remove(cluster.on_local_event)
