"""Cross-origin access for pages on other origins (sans-IO).

An allow-list of origins; ``*`` (development only) allows any origin without credentials.
With ``allow_credentials`` (cookie auth for ``EventSource({withCredentials: true})``) the
exact origin is echoed with ``Access-Control-Allow-Credentials: true`` (a browser refuses
``*`` with credentials). ``Last-Event-ID`` is allowed as a request header, and exposed, so
fetch-based SSE clients can send and read it; preflights for publish are answered here.
"""

from __future__ import annotations

from typing import Final

ALLOW_HEADERS: Final = "Content-Type, Authorization, Last-Event-ID"
EXPOSE_HEADERS: Final = "Last-Event-ID, Retry-After"
ALLOW_METHODS: Final = "GET, POST, OPTIONS"
MAX_AGE_SECONDS: Final = 600


class CorsPolicy:
    """Decides the CORS headers of a response.

    Args:
        allow_origins: exact origins (``https://app.example``), or ``*``.
        allow_credentials: let pages send cookies (never with ``*``: origins are echoed).
    """

    def __init__(
        self, allow_origins: tuple[str, ...] = (), allow_credentials: bool = False
    ) -> None:
        self.any = "*" in allow_origins
        self.origins = frozenset(o.rstrip("/") for o in allow_origins if o != "*")
        self.credentials = allow_credentials
        self.enabled = bool(allow_origins)

    def listed(self, origin: str) -> bool:
        """Whether ``origin`` is on the allow-list by name (``*`` does not count)."""
        return origin.rstrip("/") in self.origins

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers for a simple (non-preflight) response to ``origin``."""
        if not self.enabled or not origin:
            return []
        if origin in self.origins:
            allow = origin
        elif self.any:
            return [
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
            ]
        else:
            return []
        headers = [
            ("Access-Control-Allow-Origin", allow),
            ("Vary", "Origin"),
            ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
        ]
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    def preflight(self, origin: str | None) -> list[tuple[str, str]] | None:
        """Headers for an ``OPTIONS`` preflight, or ``None`` if the origin is not allowed."""
        headers = self.headers(origin)
        if not headers:
            return None
        return [
            *headers,
            ("Access-Control-Allow-Methods", ALLOW_METHODS),
            ("Access-Control-Allow-Headers", ALLOW_HEADERS),
            ("Access-Control-Max-Age", str(MAX_AGE_SECONDS)),
        ]
