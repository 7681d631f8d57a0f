"""Peer authentication: an HMAC challenge on the shared secret (sans-IO).

Each side sends a fresh random nonce in its ``hello``; each then proves it knows the secret
with ``HMAC-SHA256(secret, label | peer's nonce | own nonce | own node id)``. The MAC binds
both nonces (no replay from another link) and the claimed node id (no identity swap). The
secret itself never crosses the wire, and the peer port never serves anything before both
proofs check out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Final

LABEL: Final = b"broker-peer-link-v1|"
NONCE_BYTES: Final = 16


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def prove(secret: bytes, peer_nonce: bytes, own_nonce: bytes, own_node: str) -> bytes:
    """The MAC this node sends."""
    message = LABEL + peer_nonce + own_nonce + own_node.encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def verify(secret: bytes, own_nonce: bytes, peer_nonce: bytes, peer_node: str, mac: bytes) -> bool:
    """Check the MAC the peer sent (constant time)."""
    return hmac.compare_digest(prove(secret, own_nonce, peer_nonce, peer_node), mac)
