"""The edge policy of every hot request: CORS, auth, rate and connection limits.

One object, built from config, consulted by both the data plane and the ASGI adapter, so a
request is judged the same whichever connection it arrived on.

The origin rule (cross-site request forgery and WebSocket hijacking). A browser attaches
the auth cookie to requests any site makes, so a request authenticated by the cookie may
change state (publish, ``DELETE``, a WebSocket upgrade, and so WebSocket commands) only
when its ``Origin`` is the broker's own (same host) or named on the ``[cors]`` allow-list
(``*`` does not count); without an ``Origin`` it is refused too, because browsers send one
on every such request and only a non-browser client omits it (which should send a header
token). A WebSocket upgrade that carries an ``Origin`` must come from an allowed one
(``*`` counts here) whatever its credentials: browsers apply no CORS to WebSockets.
Header tokens carry no ambient authority and are not affected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .auth import ANONYMOUS, Authenticator, CrossOrigin, Identity, bearer_token
from .cors import CorsPolicy
from .limits import ConnectionLimiter, RateLimiter
from .routes import Route


@dataclass
class Policy:
    """CORS, authentication and limits for hot requests (defaults: everything open)."""

    auth: Authenticator = field(default_factory=Authenticator)
    cors: CorsPolicy = field(default_factory=CorsPolicy)
    rate: RateLimiter = field(default_factory=lambda: RateLimiter(0, 1))
    connections: ConnectionLimiter = field(default_factory=lambda: ConnectionLimiter(0, 0))
    cookie: str = "broker_token"
    query_token: bool = False

    def identify(
        self,
        route: Route | None,
        headers: Mapping[str, str],
        query: Mapping[str, list[str]] | None = None,
    ) -> Identity:
        """The request's identity.

        Raises:
            Unauthorized: an unusable token.
            DuplicateCredentials: two different tokens.
        """
        if not self.auth.enabled:
            return ANONYMOUS
        token, from_cookie = bearer_token(
            headers,
            route.query if route is not None else (query or {}),
            cookie=self.cookie,
            query_token=self.query_token,
        )
        return self.auth.identify(token, cookie=from_cookie)

    def admit_publish(
        self, route: Route, headers: Mapping[str, str], peer: str, topics: list[str], now: float
    ) -> Identity:
        """Check a publish of ``topics``.

        Raises:
            Unauthorized, Forbidden (CrossOrigin included), TooManyRequests.
        """
        identity = self.identify(route, headers)
        if identity.cookie:
            self.check_cookie_origin(headers)
        self.auth.check_publish(identity, topics)
        self.rate.take(
            f"sub:{identity.subject}" if identity.subject else f"ip:{peer}", now, len(topics)
        )
        return identity

    def admit_subscribe(
        self, route: Route, headers: Mapping[str, str], *, upgrade: bool = False
    ) -> Identity:
        """Check a subscription to the route's topics (``upgrade``: a WebSocket).

        Raises:
            Unauthorized, Forbidden (CrossOrigin included).
        """
        if upgrade:
            origin = headers.get("origin")
            if origin is not None and not self.origin_allowed(origin, headers, wildcard=True):
                raise CrossOrigin(f"WebSocket connections from {origin[:200]!r} are not allowed")
        identity = self.identify(route, headers)
        if upgrade and identity.cookie:
            self.check_cookie_origin(headers)
        self.auth.check_subscribe(identity, route.topics)
        return identity

    def admit_admin(
        self, headers: Mapping[str, str], query: Mapping[str, list[str]], topic: str
    ) -> Identity:
        """Check clearing or forgetting ``topic`` (``DELETE``).

        Raises:
            Unauthorized, Forbidden (CrossOrigin included).
        """
        identity = self.identify(None, headers, query)
        if identity.cookie:
            self.check_cookie_origin(headers)
        self.auth.check_admin(identity, topic)
        return identity

    def check_cookie_origin(self, headers: Mapping[str, str]) -> None:
        """Raises CrossOrigin unless a cookie-authenticated request may change state."""
        origin = headers.get("origin")
        if origin is None:
            raise CrossOrigin(
                "a request authenticated by cookie must carry an Origin to change state; "
                "servers should send Authorization: Bearer"
            )
        if not self.origin_allowed(origin, headers, wildcard=False):
            raise CrossOrigin(f"the auth cookie is not accepted from {origin[:200]!r}")

    def origin_allowed(self, origin: str, headers: Mapping[str, str], *, wildcard: bool) -> bool:
        """The broker's own origin (same host), a listed one, or any with ``*`` (``wildcard``)."""
        if self.cors.listed(origin) or (wildcard and self.cors.any):
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        host = headers.get("host")
        return (
            parts.scheme in ("http", "https")
            and bool(host)
            and parts.netloc.lower() == str(host).lower()
        )
