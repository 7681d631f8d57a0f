"""The broker's error tree, mapped to HTTP answers in one place (the edges).

    BrokerError
    ├── ClientError                 the request is wrong; answered with ``status`` and ``code``
    │   ├── BadRequest              400 bad_request (malformed body, bad UTF-8, empty batch …)
    │   ├── BadTopic                400 bad_topic
    │   ├── BadEventType            400 bad_event_type
    │   ├── BadEventId              400 bad_event_id
    │   ├── NotFound                404 not_found
    │   ├── MethodNotAllowed        405 method_not_allowed
    │   ├── RequestTimeout          408 request_timeout (a head or body that came too slowly)
    │   ├── TopicClosed             409 topic_closed
    │   ├── LengthRequired          411 length_required
    │   ├── PayloadTooLarge         413 payload_too_large
    │   ├── HeadersTooLarge         431 headers_too_large
    │   ├── UnsupportedMediaType    415 unsupported_media_type
    │   ├── NotImplementedCoding    501 not_implemented (a transfer coding other than chunked)
    │   └── VersionNotSupported     505 http_version_not_supported
    └── ConfigError                 a bad config file, environment variable or flag (exit 2)

Every client error renders as ``{"error": message, "code": code}``.
"""

from __future__ import annotations

import json
from typing import ClassVar


class BrokerError(Exception):
    """Base class of every error the broker raises on purpose."""


class ClientError(BrokerError):
    """The client sent something the broker will not accept."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> bytes:
        """The JSON body of the HTTP answer."""
        payload = {"error": self.message, "code": self.code}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class BadRequest(ClientError):
    status = 400
    code = "bad_request"


class BadTopic(ClientError):
    status = 400
    code = "bad_topic"


class BadEventType(ClientError):
    status = 400
    code = "bad_event_type"


class BadEventId(ClientError):
    status = 400
    code = "bad_event_id"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.allow = allow


class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"


class TopicClosed(ClientError):
    status = 409
    code = "topic_closed"


class LengthRequired(ClientError):
    status = 411
    code = "length_required"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class HeadersTooLarge(ClientError):
    status = 431
    code = "headers_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class NotImplementedCoding(ClientError):
    status = 501
    code = "not_implemented"


class VersionNotSupported(ClientError):
    status = 505
    code = "http_version_not_supported"


class ConfigError(BrokerError):
    """A configuration value is invalid; the message names the key."""
