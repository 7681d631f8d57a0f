"""Mutual TLS for peer links: both nodes present a certificate from the cluster's CA.

With ``[cluster] tls_cert``, ``tls_key`` and ``tls_ca`` set, every peer link runs inside
TLS (1.2 or later) and the HMAC handshake of ``auth.py`` runs inside it:

* the listener requires a client certificate signed by ``tls_ca`` (``CERT_REQUIRED``);
* the dialer verifies the listener's certificate against ``tls_ca`` only (never the
  system's trust store) and checks that it names the host being dialed (a DNS name or IP
  address in subjectAltName), so a node's certificate must name its advertised host and
  allow both ``serverAuth`` and ``clientAuth`` (it serves as both).

A certificate proves "this machine holds a key the cluster's CA signed"; the shared secret
still proves "this process was given the cluster's secret". An on-path attacker sees
ciphertext only and cannot relay a handshake, since it holds no certificate from the CA.

Building a context only reads files; no trio here.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerTls:
    """The two TLS contexts of one node: for the links it accepts and the links it dials."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def peer_tls(cert_file: str, key_file: str, ca_file: str) -> PeerTls:
    """Load this node's certificate chain and the cluster CA into both contexts.

    Raises:
        OSError, ssl.SSLError: a file is missing or does not hold what it should.
    """
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_file, key_file)
        context.load_verify_locations(cafile=ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return PeerTls(server=server, client=client)
