"""Who may publish and subscribe: JWT bearer tokens with topic claims (sans-IO).

A token is a JWT signed with the configured key (HS256 with a shared secret, RS256 or ES256
with a public key). Its claims ``publish`` and ``subscribe`` list topic patterns:
``jobs/42`` (exact), ``jobs/*`` (one segment), ``jobs/**`` (anything below), ``**`` (all).

Rules, checked once per request at the edge:
- with no key configured, auth is off and everyone may do everything;
- publishing always needs a token whose ``publish`` patterns cover the topic;
- subscribing needs one whose ``subscribe`` patterns cover every topic, unless the topic
  matches ``anonymous_subscribe``;
- clearing or forgetting a topic (``DELETE``) needs a token whose ``publish`` patterns cover
  it, or ``"admin": true``;
- the admin API and page (``control/admin.py``) need a token with ``"admin": true``;
- a token must carry ``exp`` unless ``require_exp`` is off; a stream it opened ends when it
  expires (the edge reads :attr:`Identity.expires`).
401 means "no usable token" (missing, malformed, expired, wrongly signed, no ``exp``); 403
means "a valid token that does not allow this". Both say why in the JSON body. A request
that names two different tokens (two ``Authorization`` fields, or the auth cookie twice with
different values) is ambiguous and gets 400 ``duplicate_credentials``, whichever plane
parsed it: nothing may depend on which of the two a parser keeps.

Where the token came from matters (:attr:`Identity.cookie`): a browser attaches a cookie to
requests that other sites make, so the edge lets a cookie change state only from an allowed
``Origin`` (``policy.py``). A header token is never ambient.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import jwt

from ..core.errors import BadRequest, ClientError

ALGORITHMS: Final = ("HS256", "RS256", "ES256")


class Unauthorized(ClientError):
    status = 401
    code = "unauthorized"


class TokenWithoutExp(Unauthorized):
    code = "token_without_exp"


class Forbidden(ClientError):
    status = 403
    code = "forbidden"


class CrossOrigin(Forbidden):
    """A cookie (ambient credential) or a WebSocket upgrade from an origin not allowed."""

    code = "cross_origin"


class DuplicateCredentials(BadRequest):
    code = "duplicate_credentials"


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
    """What a request may do: its token's patterns (``None``: no token).

    Attributes:
        admin: the token's ``admin`` claim is ``true`` (may clear and forget any topic).
        expires: the wall-clock time (seconds since the epoch) after which the token is
            refused, leeway included; ``None`` for no token or a token without ``exp``.
        cookie: the token came from the cookie, which browsers attach on their own.
    """

    subject: str | None = None
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    token: bool = False
    #: The token's ``admin`` claim is ``true``: topic administration, the admin API and page.
    admin: bool = False
    expires: float | None = None
    cookie: bool = False


ANONYMOUS: Final = Identity()


class Authenticator:
    """Verifies tokens and checks topic permissions.

    Args:
        algorithm: HS256, RS256 or ES256.
        key: the HS256 secret or the PEM public key; empty turns auth off.
        anonymous_subscribe: topic patterns anyone may subscribe to without a token.
        audience, issuer: checked when set.
        leeway_seconds: clock skew tolerated on ``exp``/``nbf``.
        require_exp: refuse tokens without ``exp``.
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
        require_exp: bool = True,
    ) -> None:
        self.enabled = bool(key)
        self.algorithm = algorithm
        self.key = key
        self.anonymous_subscribe = anonymous_subscribe
        self.audience = audience or None
        self.issuer = issuer or None
        self.leeway = leeway_seconds
        self.require_exp = require_exp

    def identify(self, token: str | None, *, cookie: bool = False) -> Identity:
        """The identity a token grants (``ANONYMOUS`` for none).

        Args:
            token: the compact JWT, or ``None``.
            cookie: the token came from the cookie (see :attr:`Identity.cookie`).

        Raises:
            Unauthorized: a token that is malformed, expired or wrongly signed, or has no
                ``exp`` while ``require_exp`` is on (``TokenWithoutExp``).
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
                options={"require": ["exp"]} if self.require_exp else None,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "exp":
                raise TokenWithoutExp(
                    "the token has no exp claim; tokens must expire ([auth] require_exp)"
                ) from None
            raise Unauthorized(f"invalid token: {exc}") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return Identity(
            subject=str(claims.get("sub")) if claims.get("sub") is not None else None,
            publish=_patterns(claims.get("publish")),
            subscribe=_patterns(claims.get("subscribe")),
            token=True,
            admin=claims.get("admin") is True,
            expires=_expiry(claims.get("exp"), self.leeway),
            cookie=cookie,
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

    def check_admin(self, identity: Identity, topic: str) -> None:
        """Clearing or forgetting ``topic``. Raises Unauthorized or Forbidden."""
        if not self.enabled:
            return
        if not identity.token:
            raise Unauthorized(
                "changing a topic needs a token: Authorization: Bearer <jwt> (or the cookie)"
            )
        if not identity.admin and not allowed(identity.publish, topic):
            raise Forbidden(f"this token may not clear or forget {topic!r}")

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


def _expiry(exp: Any, leeway: float) -> float | None:
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp) + leeway
    return None


def bearer_token(
    headers: Mapping[str, str], query: Mapping[str, list[str]], *, cookie: str, query_token: bool
) -> tuple[str | None, bool]:
    """The token of a request: ``Authorization: Bearer``, then the cookie, then the query.

    ``headers`` holds each field once, repeated fields joined with ``", "`` (both planes
    build it so; a ``Cookie`` split over HTTP/2 fields is joined with ``"; "``).

    Returns:
        ``(token, from_cookie)``; ``(None, False)`` when the request names none.

    Raises:
        DuplicateCredentials: two ``Authorization`` fields (a bearer token never holds a
            comma), or the auth cookie twice with different values.
    """
    authorization = headers.get("authorization", "")
    if "," in authorization:
        raise DuplicateCredentials("more than one Authorization header")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    if cookie and cookie in headers.get("cookie", ""):
        found: str | None = None
        # A cookie value never holds "," or ";" (RFC 6265 4.1.1): repeated Cookie fields
        # joined with ", " split here as well.
        for part in headers.get("cookie", "").replace(",", ";").split(";"):
            name, _, value = part.strip().partition("=")
            if name == cookie and value:
                if found is not None and value != found:
                    raise DuplicateCredentials(f"the {cookie} cookie is sent twice")
                found = value
        if found is not None:
            return found, True
    if query_token:
        values = query.get("access_token")
        if values and values[-1]:
            if len(values) > 1 and len(set(values)) > 1:
                raise DuplicateCredentials("more than one access_token")
            return values[-1], False
    return None, False


#: How long a minted token is valid unless told otherwise (``broker token --ttl``).
DEFAULT_TOKEN_TTL_SECONDS: Final = 3600


def mint_token(
    *,
    algorithm: str,
    key: str,
    now: float,
    ttl_seconds: float = DEFAULT_TOKEN_TTL_SECONDS,
    subject: str = "",
    publish: Iterable[str] = (),
    subscribe: Iterable[str] = (),
    admin: bool = False,
    audience: str = "",
    issuer: str = "",
) -> str:
    """A signed token carrying exactly the claims :class:`Authenticator` reads.

    Args:
        algorithm: HS256, RS256 or ES256.
        key: the HS256 secret, or the PEM *private* key for RS256/ES256.
        now: the issue time (seconds since the epoch: a JWT's clock is wall time).
        ttl_seconds: ``exp`` is ``now`` plus this.
        subject, publish, subscribe: the ``sub``, ``publish`` and ``subscribe`` claims.
        admin: adds ``"admin": true`` (topic administration).
        audience, issuer: the ``aud`` and ``iss`` claims, when the broker checks them.

    Raises:
        ValueError: an unknown algorithm, an empty key or a key that cannot sign.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    if not key:
        raise ValueError("no signing key")
    claims: dict[str, Any] = {"iat": int(now), "exp": int(now + ttl_seconds)}
    if subject:
        claims["sub"] = subject
    if publish := list(publish):
        claims["publish"] = publish
    if subscribe := list(subscribe):
        claims["subscribe"] = subscribe
    if admin:
        claims["admin"] = True
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    try:
        return jwt.encode(claims, key, algorithm=algorithm)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot sign with this key: {exc}") from None
