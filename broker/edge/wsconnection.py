"""One WebSocket subscriber connection on the data plane.

wsproto does the handshake and parses the client's frames; the broker writes its own
frames, so each event's frame is encoded once and shared (``websocket.py``). Everything the
server sends on the socket, pongs and acks included, goes through the connection's
:class:`~broker.hub.subscriber.Subscriber`, so a control frame never lands inside a partly
written event frame.

The stream opens like every other (``session.open_stream``: admit, prepare, subscribe);
:class:`WebSocketTransport` is what is particular to WebSocket: the upgrade, and the
connection task, which is the reader. It answers pings, runs commands, and watches the peer:
after ``ping_interval`` seconds without a byte from the client it sends a ping, and a
client that then stays silent for ``ping_timeout`` seconds is dropped. Any exit (client
gone, close frame, eviction, shutdown, error) leaves the ``with hub.subscribe`` scope and
the connection's nursery, so its subscription and its writer end with it.

Commands. On the in-memory/mesh engine nothing a command does awaits, so the reader runs
each one as it arrives and answers at once. On a store (the Redis engine) a ``publish``
waits for the store; there the reader hands every command, in arrival order, to the
connection's command task (started with the first command), which runs them one at a
time: answers keep command order, publishes from one socket are stored in that order, and
the reader goes on answering pings and close frames meanwhile. At most
:data:`COMMAND_QUEUE` commands wait; past that the reader stops reading until one is done
(TCP pushes back on the client).

Replies are bounded (issue 17). Acks, command errors and pongs share the subscriber's
outbound budget with events (``subscriber.py``): a client that sends commands but does not
read their answers fills it, and is then closed with 1008 and a log line; the reader stops
reading it at once, so neither its commands nor its replies can grow the broker. After any
close frame of ours the connection lingers (:func:`_linger`) so the client can read it.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any, Final

import trio
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from ..core.errors import BadRequest, ClientError
from ..hub import Hub, PublishItem, Unavailable
from ..hub.subscriber import Codec, Sink, SocketSink, Subscriber
from ..wire import websocket
from ..wire.commands import Command, error_payload, parse_command
from .auth import Forbidden, Identity
from .http1 import error_response
from .policy import Policy
from .routes import Route
from .session import Streams

log = logging.getLogger(__name__)

#: Commands that may wait behind a publish in flight on a store engine.
COMMAND_QUEUE: Final = 16

#: After our close frame: how long unread client bytes are read and discarded (see _linger).
LINGER_SECONDS: Final = 2.0

#: End reasons after which the client was sent a close frame.
_SENT_CLOSE: Final = frozenset({"closed", "over_budget", "auth_expired"})


@dataclass(frozen=True, slots=True)
class WsOptions:
    """``[websocket]`` settings."""

    ping_interval: float = 15.0
    ping_timeout: float = 10.0
    max_message_bytes: int = 64 * 1024
    allow_publish: bool = False


class WebSocketTransport:
    """A WebSocket subscriber on the data plane (a :class:`~.session.StreamTransport`).

    Refusals before the upgrade are HTTP answers; once the handshake is done the connection
    task is :meth:`serve`, the reader (see the module docstring).
    """

    __slots__ = (
        "_binary",
        "after_head",
        "cors",
        "options",
        "peer",
        "raw_request",
        "route",
        "stream",
        "streams",
    )
    kind = "ws"

    def __init__(
        self,
        stream: trio.SocketStream,
        raw_request: bytes,
        after_head: bytes,
        route: Route,
        cors: list[tuple[str, str]],
        *,
        streams: Streams,
        options: WsOptions,
        peer: str = "?",
    ) -> None:
        self.stream = stream
        self.raw_request = raw_request
        self.after_head = after_head
        self.route = route
        self.cors = cors
        self.streams = streams
        self.options = options
        self.peer = peer
        self._binary = route.param("format") == "msgpack"

    async def refuse(self, error: ClientError) -> None:
        await _send_quietly(self.stream, error_response(error, keep_alive=False, headers=self.cors))

    async def degrade(self, error: Unavailable, resume_from: str | None) -> None:
        await self.refuse(error)  # 503 + Retry-After: the client library retries

    async def over(self) -> bool:
        return False  # the replay ends the stream with broker.end, like a live final event

    async def accept(self) -> bytes | None:
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            handshake.receive_data(self.raw_request)
            upgrade = next((e for e in handshake.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:
            upgrade = None
            log.info("%s: bad WebSocket handshake: %s", self.peer, exc)
        if upgrade is None:
            await self.refuse(BadRequest("not a valid WebSocket upgrade request"))
            return None
        subprotocol = None
        if websocket.SUBPROTOCOL_MSGPACK in upgrade.subprotocols:
            subprotocol, self._binary = websocket.SUBPROTOCOL_MSGPACK, True
        elif websocket.SUBPROTOCOL_JSON in upgrade.subprotocols:
            subprotocol, self._binary = websocket.SUBPROTOCOL_JSON, False
        accepted = handshake.send(AcceptConnection(subprotocol=subprotocol))
        if not await _send_quietly(self.stream, accepted):
            return None
        return b""

    def sink(self) -> Sink:
        return SocketSink(self.stream.socket)

    def codec(self) -> Codec:
        return websocket.WsCodec(binary=self._binary)

    async def serve(
        self, subscriber: Subscriber, nursery: trio.Nursery, identity: Identity
    ) -> None:
        # wsproto's server handshake drops bytes that came with the upgrade request; keep them.
        connection = Connection(ConnectionType.SERVER, trailing_data=self.after_head)
        session = _Session(
            self.streams.hub,
            subscriber,
            connection,
            self.options,
            self.streams.limits.max_topics_per_subscription,
            self.streams.policy,
            identity,
            self.peer,
            nursery,
        )
        try:
            await session.read_loop(self.stream.socket)
        except Exception:
            log.exception("%s: internal error", subscriber)
            subscriber.close(websocket.close_frame(websocket.CLOSE_INTERNAL_ERROR))
        if subscriber.closing:
            await trio.sleep_forever()  # the writer ends us once the close is out

    async def finish(self, subscriber: Subscriber) -> None:
        if subscriber.end_reason in _SENT_CLOSE:
            await _linger(self.stream.socket)


class _Session:
    def __init__(
        self,
        hub: Hub,
        subscriber: Subscriber,
        connection: Connection,
        options: WsOptions,
        max_topics: int,
        policy: Policy,
        identity: Identity,
        peer: str,
        nursery: trio.Nursery,
    ) -> None:
        self.hub = hub
        self.nursery = nursery
        self.policy = policy
        self.identity = identity
        self.peer = peer
        self.subscriber = subscriber
        self.connection = connection
        self.options = options
        self.max_topics = max_topics
        # The subscriber was built with a WsCodec just above; Subscriber types it as any Codec.
        self.codec: websocket.WsCodec = subscriber.codec  # type: ignore[assignment]
        self._parts: list[bytes | str] = []
        self._size = 0
        self._unparsed = 0
        #: Complete messages the reader read, for the command task (store engine only).
        self._inbox: list[bytes | str] = []
        self._commands: trio.MemorySendChannel[bytes | str] | None = None

    async def read_loop(self, sock: trio.socket.SocketType) -> None:
        options = self.options
        waiting_for_pong = False
        # Bytes that arrived with the upgrade request are already in wsproto's buffer.
        if not await self._feed(b""):
            return
        while not self.subscriber.ended:
            limit = options.ping_timeout if waiting_for_pong else options.ping_interval
            with trio.move_on_after(limit) as timer:
                try:
                    data = await sock.recv(65536)
                except OSError:
                    return
            if timer.cancelled_caught:
                if waiting_for_pong:
                    log.info("%s: no answer to ping, dropped", self.subscriber)
                    self.subscriber.end("unresponsive")
                    return
                if not self._reply(websocket.PING):
                    return
                waiting_for_pong = True
                continue
            waiting_for_pong = False
            if not data or not await self._feed(data):
                return

    async def _feed(self, data: bytes) -> bool:
        """:meth:`_process` the bytes, then queue the commands they completed, in order."""
        alive = self._process(data)
        inbox, self._inbox = self._inbox, []
        for message in inbox if alive else ():
            if self._commands is None:
                send, receive = trio.open_memory_channel[bytes | str](COMMAND_QUEUE)
                self._commands = send
                self.nursery.start_soon(self._command_task, receive)
            await self._commands.send(message)
        return alive

    async def _command_task(self, messages: trio.MemoryReceiveChannel[bytes | str]) -> None:
        """Run a store engine's commands one at a time, in arrival order."""
        async for message in messages:
            if self.subscriber.closing:
                return
            try:
                publishing = self._command(message)
                if publishing is not None:
                    await self._publish_stored(*publishing)
            except Exception:
                log.exception("%s: internal error", self.subscriber)
                self.subscriber.close(websocket.close_frame(websocket.CLOSE_INTERNAL_ERROR))
                return

    def _process(self, data: bytes) -> bool:
        """Feed bytes to wsproto and handle its events; ``False`` ends the connection."""
        try:
            if data:
                self.connection.receive_data(data)
                self._unparsed += len(data)
            for event in self.connection.events():
                self._unparsed = 0
                if not self._handle(event) or self.subscriber.closing:
                    return False
            # wsproto buffers a frame until it is complete; bound what a peer can make it hold.
            if self._unparsed > self.options.max_message_bytes + 1024:
                log.info("%s: frame over %d bytes", self.subscriber, self.options.max_message_bytes)
                self.subscriber.close(
                    websocket.close_frame(websocket.CLOSE_TOO_BIG, "frame too big")
                )
                return False
        except RemoteProtocolError as exc:
            log.info("%s: protocol error: %s", self.subscriber, exc)
            self.subscriber.close(websocket.close_frame(websocket.CLOSE_PROTOCOL_ERROR))
            return False
        return True

    def _handle(self, event: Any) -> bool:
        """Handle one wsproto event; ``False`` ends the connection."""
        subscriber = self.subscriber
        if isinstance(event, Ping):
            return self._reply(self.connection.send(event.response()))
        elif isinstance(event, CloseConnection):
            subscriber.close(self.connection.send(event.response()))
            return False
        elif isinstance(event, TextMessage | BytesMessage):
            self._size += len(event.data)
            if self._size > self.options.max_message_bytes:
                log.info("%s: message over %d bytes", subscriber, self.options.max_message_bytes)
                subscriber.close(websocket.close_frame(websocket.CLOSE_TOO_BIG, "message too big"))
                return False
            data = event.data
            self._parts.append(bytes(data) if isinstance(data, bytearray) else data)
            if event.message_finished:
                parts, self._parts, self._size = self._parts, [], 0
                message: bytes | str = (
                    "".join(p for p in parts if isinstance(p, str))
                    if isinstance(event, TextMessage)
                    else b"".join(p for p in parts if not isinstance(p, str))
                )
                if self.hub.synchronous:
                    self._command(message)  # nothing awaits: answered right here
                else:
                    self._inbox.append(message)
        return True

    def _command(self, message: bytes | str) -> tuple[Any, PublishItem] | None:
        """Run one command and answer it, or return the ``(ref, item)`` a store must keep."""
        ref: Any = None
        try:
            value = self.codec.decode(message)
            ref = value.get("ref") if isinstance(value, dict) else None
            command = parse_command(value, max_topics=self.max_topics)
            answer = self._run(command)
        except ClientError as error:
            self._answer_error(ref, error)
            return None
        if isinstance(answer, PublishItem):
            return ref, answer
        self._reply(self.codec.notice("broker.ack", None, answer))
        return None

    async def _publish_stored(self, ref: Any, item: PublishItem) -> None:
        """Publish on a store and answer once it has the event (or refused it)."""
        try:
            [event_id] = await self.hub.publish([item])
        except ClientError as error:  # Unavailable (store_unavailable), TopicClosed
            self._answer_error(ref, error)
            return
        answer = {"ref": ref, "op": "publish", "id": event_id, "topic": item.topic}
        self._reply(self.codec.notice("broker.ack", None, answer))

    def _answer_error(self, ref: Any, error: ClientError) -> None:
        payload = error_payload(ref, error)
        self._reply(self.codec.notice("broker.command_error", None, payload))

    def _reply(self, frame: bytes) -> bool:
        """Send a never-dropped frame; close 1008 if the client's budget cannot hold it."""
        subscriber = self.subscriber
        if subscriber.send_control(frame):
            return True
        mailbox = subscriber.mailbox
        log.warning(
            "%s: closed 1008, its unread replies passed the outbound budget (%d bytes, %d frames)",
            subscriber,
            mailbox.max_bytes,
            mailbox.max_events,
        )
        subscriber.abort(
            websocket.close_frame(websocket.CLOSE_POLICY_VIOLATION, "too many unread replies"),
            "over_budget",
        )
        return False

    def _run(self, command: Command) -> dict[str, Any] | PublishItem:
        subscriber, hub = self.subscriber, self.hub
        if command.op == "subscribe":
            self.policy.auth.check_subscribe(self.identity, command.topics)
            if len(subscriber.topics | set(command.topics)) > self.max_topics:
                raise BadRequest(f"at most {self.max_topics} topics per subscription")
            hub.add_topics(subscriber, command.topics)
        elif command.op == "unsubscribe":
            hub.remove_topics(subscriber, command.topics)
        else:
            if not self.options.allow_publish:
                raise Forbidden("publishing over WebSocket is off ([websocket] allow_publish)")
            self.policy.auth.check_publish(self.identity, command.topics)
            identity = self.identity
            self.policy.rate.take(
                f"sub:{identity.subject}" if identity.subject else f"ip:{self.peer}",
                trio.current_time(),  # the clock the HTTP publishes' limiter reads too
            )
            if not hub.synchronous:  # the store keeps it: the command task awaits it
                return PublishItem(
                    command.topics[0], command.data, command.event_type, command.is_json
                )
            event = hub.publish_nowait(
                command.topics[0],
                command.data,
                event_type=command.event_type,
                is_json=command.is_json,
            )
            return {"ref": command.ref, "op": "publish", "id": event.id, "topic": event.topic}
        return {"ref": command.ref, "op": command.op, "topics": sorted(subscriber.topics)}


async def _linger(sock: trio.socket.SocketType) -> None:
    """Half-close, then discard what the client still sends, for up to ``LINGER_SECONDS``.

    Closing a socket with unread input makes the kernel reset the connection, and the
    client's kernel then drops what it had not yet handed to the client: our close frame
    (1008 after a flood of commands) would never be read. Reading to the client's end of
    the stream first lets it arrive. Nothing read is kept.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    with trio.move_on_after(LINGER_SECONDS):
        while True:
            try:
                if not await sock.recv(65536):
                    return
            except OSError:
                return


async def _send_quietly(stream: trio.SocketStream, data: bytes) -> bool:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True
