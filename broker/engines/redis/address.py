"""Where Redis is: one URL for a single server, a Redis Cluster or Sentinel (sans-IO).

Accepted forms (``rediss`` instead of ``redis`` turns TLS on)::

    redis://[user:password@]host[:6379][/db]          one server (or a proxy)
    unix:///path/to/redis.sock[?db=0]                 one server on a Unix socket
    redis+cluster://[user:password@]h1:p1[,h2:p2...]  Redis Cluster (any reachable seeds)
    redis+sentinel://[user:password@]h1:p1[,h2:p2...]/service[/db]
                                                      the primary Sentinel names ``service``

The URL is checked when the settings are loaded, so a typo stops ``broker run`` with one
line naming ``[cluster] redis_url`` (exit 2) before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote

Kind = Literal["single", "cluster", "sentinel"]
_SCHEMES: Final[dict[str, tuple[Kind, bool]]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
DEFAULT_PORTS: Final[dict[Kind, int]] = {"single": 6379, "cluster": 6379, "sentinel": 26379}


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """A parsed ``redis_url``.

    Attributes:
        kind: ``single``, ``cluster`` or ``sentinel``.
        url: the URL as given (for a single server, what the client is built from).
        nodes: ``(host, port)`` of the server, the cluster seeds or the sentinels.
        service: the Sentinel service name.
        db: the database number (single server and Sentinel only).
        tls: connect with TLS.
        username, password: credentials, if any.
        unix_path: the socket path of a ``unix://`` URL.
    """

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None
    unix_path: str = ""

    def redacted(self) -> str:
        """The URL with its password hidden (for log lines and errors)."""
        if self.password is None:
            return self.url
        return self.url.replace(f":{self.password}@", ":***@", 1)


def parse_redis_url(url: str) -> RedisAddress:
    """Parse a ``redis_url`` (see module docstring).

    Raises:
        ValueError: with a message that says what is wrong (never the password).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected a URL like redis://host:6379/0")
    scheme = scheme.lower()
    if scheme == "unix":
        path, _, query = rest.partition("?")
        if not path.startswith("/"):
            raise ValueError("a unix:// URL needs an absolute socket path")
        db = 0
        for pair in query.split("&") if query else []:
            name, _, value = pair.partition("=")
            if name == "db":
                db = _db(value)
        return RedisAddress("single", url, db=db, unix_path=path)
    if scheme not in _SCHEMES:
        raise ValueError(
            f"unknown scheme {scheme!r}: use redis, rediss, redis+cluster, redis+sentinel or unix"
        )
    kind, tls = _SCHEMES[scheme]
    netloc, _, path = rest.partition("/")
    path, _, _query = path.partition("?")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    nodes = tuple(_node(part, DEFAULT_PORTS[kind]) for part in netloc.split(","))
    if kind == "single" and len(nodes) > 1:
        raise ValueError("several hosts need redis+cluster:// or redis+sentinel://")
    segments = [s for s in path.split("/") if s]
    service, db = "", 0
    if kind == "sentinel":
        if not segments:
            raise ValueError("a redis+sentinel:// URL needs the service name: .../mymaster")
        service = unquote(segments.pop(0))
    if segments:
        if kind == "cluster":
            raise ValueError("Redis Cluster has no database number")
        db = _db(segments.pop(0))
    if segments:
        raise ValueError(f"unexpected path {path!r}")
    return RedisAddress(kind, url, nodes, service, db, tls, username, password)


def _node(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if not text:
        raise ValueError("a host is missing")
    if text.startswith("["):  # [::1]:6379
        host, _, port_text = text[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError("a host is missing")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}")
    return host, int(port_text)


def _db(text: str) -> int:
    if not text.isdigit() or int(text) > 10_000:
        raise ValueError(f"bad database number {text!r}")
    return int(text)
