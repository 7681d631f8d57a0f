"""The client's error tree.

::

    BrokerError                  base of everything this library raises on purpose
    ├── ClientError              4xx: the broker rejected the request (status, code, message)
    ├── ServerError              5xx: the broker failed; the request may have taken effect
    ├── BrokerUnavailable        no node could be reached, or the connection broke mid-request
    ├── BrokerTimeout            a node was reached but did not answer in time
    └── ProtocolError            the answer was not the broker protocol (content type, frame)

Lower-layer exceptions (httpx, trio-websocket, json, msgpack) are translated where they cross into
the client and chained as ``__cause__``; they never leak out raw.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "BrokerError",
    "BrokerTimeout",
    "BrokerUnavailable",
    "ClientError",
    "ProtocolError",
    "ServerError",
    "error_from_response",
]


class BrokerError(Exception):
    """Base class of every error the client raises on purpose.

    Attributes:
        message: a human-readable description.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientError(BrokerError):
    """The broker answered 4xx: the request itself is wrong and retrying will not help.

    Attributes:
        status: the HTTP status (400, 404, 413, 415, ...).
        code: the broker's stable machine code (``"bad_topic"``...), or ``"http_<status>"``
            when the answer did not carry the broker's JSON error body.
        message: the broker's ``error`` text.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ServerError(BrokerError):
    """The broker answered 5xx.

    A publish that gets this answer is **not** retried: the broker may have stored the event
    before failing, and a retry could publish it twice.

    Attributes:
        status: the HTTP status.
        message: the body text (truncated) or the broker's ``error`` text.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BrokerUnavailable(BrokerError):
    """No node could be reached (refused, unresolvable, reset), or the connection broke."""


class BrokerTimeout(BrokerError):
    """A node accepted the connection but did not answer within the client's ``timeout``."""


class ProtocolError(BrokerError):
    """The peer answered, but not in the broker protocol (e.g. ``text/html`` from a proxy)."""


_MAX_ERROR_TEXT_CHARS = 300


def error_from_response(status: int, body: bytes | None) -> BrokerError:
    """Build the error for a non-2xx HTTP answer.

    Args:
        status: the HTTP status code.
        body: the response body, if any; the broker sends ``{"error": MESSAGE, "code": CODE}``.

    Returns:
        A :class:`ClientError` for 4xx, a :class:`ServerError` for 5xx and a
        :class:`ProtocolError` for anything else (1xx, 3xx).
    """
    message, code = _parse_error_body(body or b"")
    if 400 <= status < 500:
        return ClientError(status, code or f"http_{status}", message)
    if 500 <= status < 600:
        return ServerError(status, message)
    return ProtocolError(f"unexpected HTTP status {status}: {message}")


def _parse_error_body(body: bytes) -> tuple[str, str | None]:
    text = body.decode("utf-8", errors="replace")
    try:
        value: Any = json.loads(text)
    except ValueError:
        return text.strip()[:_MAX_ERROR_TEXT_CHARS], None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        code = value.get("code")
        return value["error"], code if isinstance(code, str) else None
    return text.strip()[:_MAX_ERROR_TEXT_CHARS], None
