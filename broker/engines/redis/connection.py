"""Connecting to Redis: one client for a single server, Redis Cluster or Sentinel.

:func:`connect` builds the coredis client for a parsed ``redis_url`` (``address.py``),
with TLS (:func:`tls_context`) for the ``rediss`` forms, and checks that Redis answers.
:data:`FAILURES` is what any Redis call can fail with; :func:`startup_error` turns a
failure at start into the one line ``broker run`` prints (exit code 2).
"""

from __future__ import annotations

import ssl
from contextlib import AsyncExitStack
from typing import Any, Final

import anyio
import coredis
import trio
from coredis.connection import TCPLocation
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from ...core.errors import ConfigError
from .address import RedisAddress
from .base import RedisOptions

#: What a Redis call can fail with (``OSError`` includes the builtin ``TimeoutError``;
#: anyio's errors come from a connection coredis closed under a pending command).
FAILURES: Final = (
    RedisError,
    OSError,
    trio.TooSlowError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
)


def first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def startup_error(address: RedisAddress, exc: BaseException) -> ConfigError:
    detail = str(exc) or type(exc).__name__
    root = exc
    while root.__cause__ is not None:  # coredis wraps the reason (refused, TLS) in its own
        root = first_leaf(root.__cause__)
    if root is not exc:
        detail = f"{detail}: {str(root) or type(root).__name__}"
    return ConfigError(f"[cluster] redis_url {address.redacted()}: cannot use Redis: {detail}")


def tls_context(options: RedisOptions) -> ssl.SSLContext:
    """The TLS context for a ``rediss`` URL: Redis's certificate and host name are
    verified (against ``tls_ca_file``, or the system's CAs); a client certificate is
    presented if one is configured."""
    context = ssl.create_default_context(cafile=options.tls_ca_file or None)
    if options.tls_cert_file:
        context.load_cert_chain(options.tls_cert_file, options.tls_key_file or None)
    return context


async def connect(address: RedisAddress, options: RedisOptions, stack: AsyncExitStack) -> Any:
    """A connected client for ``address`` whose lifetime is ``stack``'s.

    The client's context (its connection pool runs a task group) is entered outside any
    cancel scope of ours: the connect and command timeouts bound the wait instead.
    """
    timeout = options.timeout_seconds
    common: dict[str, Any] = {
        "connect_timeout": timeout,
        "stream_timeout": timeout,
        "username": address.username,
        "password": address.password,
    }
    if address.tls:  # coredis's own default would verify no host name
        common["ssl_context"] = tls_context(options)
    client: Any
    if address.kind == "cluster":
        client = coredis.RedisCluster(
            startup_nodes=[TCPLocation(host, port) for host, port in address.nodes],
            ssl=address.tls,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),
            **common,
        )
    elif address.kind == "sentinel":
        sentinel = coredis.Sentinel(
            [TCPLocation(host, port) for host, port in address.nodes],
            decode_responses=True,
            sentinel_kwargs={"connect_timeout": timeout, "stream_timeout": timeout},
        )
        await stack.enter_async_context(sentinel)
        client = sentinel.primary_for(address.service, db=address.db, **common)
    elif address.unix_path:
        client = coredis.Redis(
            unix_socket_path=address.unix_path,
            db=address.db,
            decode_responses=True,
            retry_policy=NoRetryPolicy(),
            **common,
        )
    else:
        client = coredis.Redis.from_url(
            address.url, decode_responses=True, retry_policy=NoRetryPolicy(), **common
        )
    await stack.enter_async_context(client)
    with trio.fail_after(timeout):
        await client.ping()
    return client
