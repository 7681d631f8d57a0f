"""Who may publish and subscribe: JWT bearer tokens with topic claims (sans-IO).

A token is a JWT signed with the configured key (HS256 with a shared secret, RS256 or ES256
with a public key). Its claims ``publish`` and ``subscribe`` list topic patterns:
``jobs/42`` (exact), ``jobs/*`` (one segment), ``jobs/**`` (anything below), ``**`` (all).

Rules, checked once per request at the edge:
- with no key configured, auth is off and everyone may do everything;
- publishing always needs a token whose ``publish`` patterns cover the topic;
- subscribing needs one whose ``subscribe`` patterns cover every topic, unless the topic
  matches ``anonymous_subscribe``.
401 means "no usable token" (missing, malformed, expired, wrongly signed); 403 means "a valid
token that does not allow this". Both say why in the JSON body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import jwt

from ..core.errors import ClientError

ALGORITHMS: Final = ("HS256", "RS256", "ES256")


class Unauthorized(ClientError):
    status = 401
    code = "unauthorized"


class Forbidden(ClientError):
    status = 403
    code = "forbidden"


@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\*\*|\*)", pattern):
        if piece == "**":
            parts.append(".*")
        elif piece == "*":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def allowed(patterns: Iterable[str], topic: str) -> bool:
    """Whether any pattern covers ``topic``."""
    return any(_pattern(p).fullmatch(topic) for p in patterns)


@dataclass(frozen=True, slots=True)
class Identity:
    """What a request may do: its token's patterns (``None``: no token)."""

    subject: str | None = None
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    token: bool = False


ANONYMOUS: Final = Identity()


class Authenticator:
    """Verifies tokens and checks topic permissions.

    Args:
        algorithm: HS256, RS256 or ES256.
        key: the HS256 secret or the PEM public key; empty turns auth off.
        anonymous_subscribe: topic patterns anyone may subscribe to without a token.
        audience, issuer: checked when set.
        leeway_seconds: clock skew tolerated on ``exp``/``nbf``.
    """

    def __init__(
        self,
        *,
        algorithm: str = "HS256",
        key: str = "",
        anonymous_subscribe: tuple[str, ...] = ("**",),
        audience: str = "",
        issuer: str = "",
        leeway_seconds: float = 30.0,
    ) -> None:
        self.enabled = bool(key)
        self.algorithm = algorithm
        self.key = key
        self.anonymous_subscribe = anonymous_subscribe
        self.audience = audience or None
        self.issuer = issuer or None
        self.leeway = leeway_seconds

    def identify(self, token: str | None) -> Identity:
        """The identity a token grants (``ANONYMOUS`` for none).

        Raises:
            Unauthorized: a token that is malformed, expired or wrongly signed.
        """
        if not self.enabled or not token:
            return ANONYMOUS
        try:
            claims: Mapping[str, Any] = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return Identity(
            subject=str(claims.get("sub")) if claims.get("sub") is not None else None,
            publish=_patterns(claims.get("publish")),
            subscribe=_patterns(claims.get("subscribe")),
            token=True,
        )

    def check_publish(self, identity: Identity, topics: Iterable[str]) -> None:
        """Raises Unauthorized (no token) or Forbidden (not allowed)."""
        if not self.enabled:
            return
        for topic in topics:
            if not identity.token:
                raise Unauthorized(
                    "publishing needs a token: Authorization: Bearer <jwt> (or the cookie)"
                )
            if not allowed(identity.publish, topic):
                raise Forbidden(f"this token may not publish to {topic!r}")

    def check_subscribe(self, identity: Identity, topics: Iterable[str]) -> None:
        """Raises Unauthorized (a token is needed) or Forbidden (not allowed)."""
        if not self.enabled:
            return
        for topic in topics:
            if identity.token and allowed(identity.subscribe, topic):
                continue
            if allowed(self.anonymous_subscribe, topic):
                continue
            if not identity.token:
                raise Unauthorized(f"subscribing to {topic!r} needs a token")
            raise Forbidden(f"this token may not subscribe to {topic!r}")


def _patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def bearer_token(
    headers: Mapping[str, str], query: Mapping[str, list[str]], *, cookie: str, query_token: bool
) -> str | None:
    """The token of a request: ``Authorization: Bearer``, then the cookie, then the query."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if cookie:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == cookie and value:
                return value
    if query_token:
        values = query.get("access_token")
        if values and values[-1]:
            return values[-1]
    return None
