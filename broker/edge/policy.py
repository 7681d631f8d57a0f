"""The edge policy of every hot request: CORS, auth, rate and connection limits.

One object, built from config, consulted by both the data plane and the ASGI adapter, so a
request is judged the same whichever connection it arrived on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .auth import ANONYMOUS, Authenticator, Identity, bearer_token
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

    def identify(self, route: Route, headers: Mapping[str, str]) -> Identity:
        """The request's identity. Raises Unauthorized for an unusable token."""
        if not self.auth.enabled:
            return ANONYMOUS
        token = bearer_token(headers, route.query, cookie=self.cookie, query_token=self.query_token)
        return self.auth.identify(token)

    def admit_publish(
        self, route: Route, headers: Mapping[str, str], peer: str, topics: list[str], now: float
    ) -> Identity:
        """Check a publish of ``topics``. Raises Unauthorized, Forbidden, TooManyRequests."""
        identity = self.identify(route, headers)
        self.auth.check_publish(identity, topics)
        self.rate.take(
            f"sub:{identity.subject}" if identity.subject else f"ip:{peer}", now, len(topics)
        )
        return identity

    def admit_subscribe(self, route: Route, headers: Mapping[str, str]) -> Identity:
        """Check a subscription to the route's topics. Raises Unauthorized, Forbidden."""
        identity = self.identify(route, headers)
        self.auth.check_subscribe(identity, route.topics)
        return identity
