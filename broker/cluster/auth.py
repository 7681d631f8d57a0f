"""The peer handshake: who may join the cluster, proven with the shared secret (sans-IO).

Theory of operation. The node that opened the connection is the *dialer*, the node that
accepted it the *listener*. Both send ``hello`` at once (node id, origin, advertised address
and a fresh 32-byte nonce); then::

    dialer   -> auth {mac: MAC(secret, transcript, "dialer")}
    listener    verifies it, and only then
    listener -> auth {mac: MAC(secret, transcript, "listener")}
    dialer      verifies it

The transcript is both hellos in a fixed order (dialer's, then listener's), each field
length-prefixed, under a domain label and the role of the node that computes the MAC:

    MAC = HMAC-SHA256(secret, DOMAIN | len role | role
                              | len d.nonce | d.nonce | len d.node | d.node | ... origin, addr
                              | len l.nonce | l.nonce | len l.node | l.node | ... origin, addr)

Invariants (each defeats a known attack on the previous version, issue 17):

* **No reflection.** A listener never sends a MAC before it has verified the dialer's, so a
  stranger who opens two connections cannot get the node to compute, for it, the proof it
  must present on the other; and the role is inside every MAC, so a listener's MAC is never
  a valid dialer's MAC even for the same nonces and names.
* **No field shifting.** Every field is length-prefixed and nonces have exactly
  :data:`NONCE_BYTES` bytes, so no two different transcripts give the same MAC input (the
  old ``nonce + name`` concatenation let ``N2 + name[:-1]`` and ``name[-1]`` collide).
* **No replay.** Each side's fresh nonce is in every MAC.
* **Constant-time checks** (:func:`hmac.compare_digest`).

What it does not do: protect the frames after the handshake. An attacker on the path can
relay a genuine handshake and then inject or read frames; run the peer link over mutual TLS
(``[cluster] tls_*``, see ``tls.py``) wherever the network between nodes is not trusted.

The state machine takes decoded frames in and returns frames to send; the caller moves
bytes and enforces the deadline. Any violation raises :class:`HandshakeFailed`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Any, Final

DOMAIN: Final = b"broker peer link handshake v2\x00"
NONCE_BYTES: Final = 32
MAC_BYTES: Final = 32
#: Longest node id, origin and address a peer may claim, in UTF-8 bytes.
MAX_NAME_BYTES: Final = 255
#: The largest frame accepted before the handshake is complete (a hello is ~300 bytes).
MAX_FRAME_BYTES: Final = 4096
DIALER: Final = "dialer"
LISTENER: Final = "listener"

_LENGTH = struct.Struct("!I")


class HandshakeFailed(Exception):
    """The peer broke the protocol or could not prove it knows the secret."""


@dataclass(frozen=True, slots=True)
class Hello:
    """What a node says about itself in its ``hello`` frame."""

    node: str
    origin: str
    addr: str


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def _field(value: bytes) -> bytes:
    return _LENGTH.pack(len(value)) + value


def transcript(
    role: str, dialer: Hello, dialer_nonce: bytes, listener: Hello, listener_nonce: bytes
) -> bytes:
    """The MAC input of the node playing ``role``: both hellos, dialer first."""
    parts = [DOMAIN, _field(role.encode())]
    for hello, nonce in ((dialer, dialer_nonce), (listener, listener_nonce)):
        parts += [
            _field(nonce),
            _field(hello.node.encode()),
            _field(hello.origin.encode()),
            _field(hello.addr.encode()),
        ]
    return b"".join(parts)


def mac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def _checked_hello(frame: dict[str, Any]) -> tuple[Hello, bytes]:
    nonce = frame.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise HandshakeFailed(f"hello needs a nonce of exactly {NONCE_BYTES} bytes")
    values = {}
    for name in ("node", "origin", "addr"):
        value = frame.get(name)
        if not isinstance(value, str):
            raise HandshakeFailed(f"hello without a {name}")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_NAME_BYTES or (name != "addr" and size == 0):
            raise HandshakeFailed(f"hello {name} of {size} bytes")
        if not value.isprintable():
            raise HandshakeFailed(f"hello {name} is not printable")
        values[name] = value
    return Hello(**values), nonce


class Handshake:
    """One side of one handshake.

    Args:
        secret: the cluster's shared secret.
        own: what this node says about itself.
        dialer: this node opened the connection.
        nonce: this side's nonce (fresh random bytes unless a test passes one).

    Use: send :meth:`start`'s frames, then pass every received frame to :meth:`receive` and
    send what it returns, until :attr:`peer` is set (the peer is then proven). After a
    :class:`HandshakeFailed`, close the connection.
    """

    def __init__(self, secret: bytes, own: Hello, *, dialer: bool, nonce: bytes | None = None):
        if not secret:
            raise ValueError("the handshake needs a secret")
        self._secret = secret
        self.own = own
        self.role = DIALER if dialer else LISTENER
        self.nonce = new_nonce() if nonce is None else nonce
        if len(self.nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce has {NONCE_BYTES} bytes")
        self._claimed: tuple[Hello, bytes] | None = None
        #: The peer, once it has proven it knows the secret.
        self.peer: Hello | None = None

    def start(self) -> list[dict[str, Any]]:
        """The frames to send first (this side's ``hello``)."""
        own = self.own
        return [
            {
                "t": "hello",
                "node": own.node,
                "origin": own.origin,
                "nonce": self.nonce,
                "addr": own.addr,
            }
        ]

    def _mac(self, role: str) -> bytes:
        assert self._claimed is not None
        peer, peer_nonce = self._claimed
        if self.role == DIALER:
            message = transcript(role, self.own, self.nonce, peer, peer_nonce)
        else:
            message = transcript(role, peer, peer_nonce, self.own, self.nonce)
        return mac(self._secret, message)

    def receive(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        """Take one frame from the peer; return the frames to send in reply.

        Raises:
            HandshakeFailed: an unexpected frame, a malformed hello, or a wrong MAC.
        """
        if self.peer is not None:
            raise HandshakeFailed("handshake already complete")
        kind = frame.get("t")
        if self._claimed is None:
            if kind != "hello":
                raise HandshakeFailed(f"expected hello, got {kind!r}")
            self._claimed = _checked_hello(frame)
            if self._claimed[1] == self.nonce:
                raise HandshakeFailed("peer echoed our nonce")
            if self.role == DIALER:
                return [{"t": "auth", "mac": self._mac(DIALER)}]
            return []  # a listener proves nothing before the dialer has
        if kind != "auth":
            raise HandshakeFailed(f"expected auth, got {kind!r}")
        proof = frame.get("mac")
        peer_role = LISTENER if self.role == DIALER else DIALER
        expected = self._mac(peer_role)
        if not isinstance(proof, bytes) or not hmac.compare_digest(expected, proof):
            raise HandshakeFailed(f"peer {self._claimed[0].node!r} failed authentication")
        self.peer = self._claimed[0]
        if self.role == LISTENER:
            return [{"t": "auth", "mac": self._mac(LISTENER)}]
        return []
