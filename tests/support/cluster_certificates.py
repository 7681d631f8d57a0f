"""Throwaway cluster CAs and node certificates for peer-link TLS tests.

A node's certificate serves both ends of a link (it listens and it dials), so it carries
``serverAuth`` and ``clientAuth`` and names 127.0.0.1 and localhost, like the ones the
openssl commands in docs/security.md make.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.certificates import _builder, _key_usage, _name, _write


@dataclass(frozen=True)
class NodeFiles:
    """The ``[cluster]`` TLS settings of one node."""

    tls_cert: str
    tls_key: str
    tls_ca: str

    def settings(self) -> dict[str, str]:
        return {"tls_cert": self.tls_cert, "tls_key": self.tls_key, "tls_ca": self.tls_ca}


class ClusterCa:
    """A CA in ``directory`` that signs node certificates."""

    def __init__(self, directory: Path, name: str = "cluster") -> None:
        self.directory = directory
        self.name = name
        self.now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.subject = _name(f"broker {name} CA")
        ca = (
            _builder(self.subject, self.subject, self.key, self.now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = _write(directory / f"{name}-ca.pem", ca)

    def node(self, node: str, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> NodeFiles:
        """A certificate and key for ``node``, valid for ``hosts``."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            _builder(_name(node), self.subject, key, self.now)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(_key_usage(ca=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        cert_file = _write(self.directory / f"{self.name}-{node}.pem", cert)
        key_file = self.directory / f"{self.name}-{node}.key"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return NodeFiles(cert_file, str(key_file), self.ca_file)
