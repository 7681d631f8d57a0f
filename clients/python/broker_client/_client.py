"""The client object: publishing over a pooled HTTP client, and subscriptions.

Theory of operation: a :class:`BrokerClient` holds the node list and one ``httpx.AsyncClient``
(one connection pool) for every publish it makes; it runs no task of its own. Each subscription
opens its own HTTP client and nursery (``_subscription.py``), so a stream never occupies or
corrupts a pooled publishing connection.

Publish retry rule: a publish is sent to the node that answered last. If the connection cannot be
*established* (refused, unresolvable, connect timeout), nothing was sent and the next node of the
list is tried, round-robin, each at most once. Once the request may have reached a node, it is
never retried: after a 5xx, a read timeout or a connection lost mid-answer the event may already
be stored, and retrying could publish it twice. Those raise :class:`ServerError`,
:class:`BrokerTimeout` or :class:`BrokerUnavailable` and the caller decides.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import httpx

from ._errors import BrokerError, BrokerTimeout, BrokerUnavailable
from ._plan import BACKOFF_SECONDS, MAX_BACKOFF_SECONDS
from ._publish import (
    PublishItem,
    Request,
    answer_id,
    answer_ids,
    batch_request,
    parse_answer,
    single_request,
)
from ._subscription import USER_AGENT, Subscription

__all__ = ["DEFAULT_URL", "TIMEOUT_SECONDS", "BrokerClient", "publish"]

DEFAULT_URL: Final = "http://127.0.0.1:8080"
TIMEOUT_SECONDS: Final = 10.0
"""Default per-request timeout, and the time a subscription has to start its first stream."""


def normalize_urls(urls: str | Sequence[str]) -> list[str]:
    """Check and normalise node URLs (``http``/``https``, no trailing slash).

    Raises:
        ValueError: no URL, or one that is not an absolute http(s) URL.
    """
    items = [urls] if isinstance(urls, str) else list(urls)
    if not items:
        raise ValueError("at least one broker URL is required")
    result = []
    for url in items:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not a broker URL (want http://host:port): {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"a broker URL has no query or fragment: {url!r}")
        result.append(url.rstrip("/"))
    return result


class BrokerClient:
    """A Trio client for one broker or a list of equivalent nodes.

    Use it as an async context manager (or call :meth:`aclose`)::

        async with BrokerClient(["http://node-a:8080", "http://node-b:8080"]) as client:
            event_id = await client.publish("jobs", {"progress": 0.4}, event="progress")
            async with client.subscribe(["jobs", "alerts"]) as events:
                async for item in events:
                    ...

    Args:
        urls: one base URL or a list of them (tried round-robin on failure).
        timeout: seconds for each publish (connect, send, answer) and for a subscription's first
            stream to start.
        heartbeat_timeout: silence (seconds) after which a stream is considered dead; by
            default 2.5 x the heartbeat period the broker announces (15 s until it does).
        backoff: base delays between consecutive reconnect attempts; later ones double the last.
        max_backoff: cap on one reconnect delay (seconds).
        token: a JWT the broker accepts (``broker token`` mints one), sent as
            ``Authorization: Bearer`` with every publish and subscription (SSE and WebSocket).

    Raises:
        ValueError: a URL is not an absolute http(s) URL.
    """

    def __init__(
        self,
        urls: str | Sequence[str] = DEFAULT_URL,
        *,
        timeout: float = TIMEOUT_SECONDS,
        heartbeat_timeout: float | None = None,
        backoff: Sequence[float] = BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        token: str | None = None,
    ) -> None:
        self._urls = normalize_urls(urls)
        self._headers = {"User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._heartbeat_timeout = heartbeat_timeout
        self._backoff = tuple(backoff)
        self._max_backoff = max_backoff
        self._preferred = 0
        self._rng = random.Random()
        self._http = httpx.AsyncClient(timeout=timeout, headers=self._headers)

    def __str__(self) -> str:
        return f"BrokerClient({', '.join(self._urls)})"

    @property
    def urls(self) -> list[str]:
        """The node URLs, normalised."""
        return list(self._urls)

    async def __aenter__(self) -> BrokerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the publishing connection pool. Open subscriptions are not affected."""
        await self._http.aclose()

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        event: str | None = None,
        retain: bool = False,
        final: bool = False,
        msgpack: bool = False,
    ) -> str:
        """Publish one event.

        Args:
            topic: the topic.
            data: ``str`` is sent as text (``text/plain``); any other JSON-serialisable value as
                JSON. ``bytes`` are refused.
            event: the event type, or ``None`` for untyped.
            retain: keep it as the topic's current state for its type: new subscribers get it
                first (re-stamped with their start position as id).
            final: close the topic after it: subscribers get :class:`Ended`, later publishes a
                ``409 topic_closed`` :class:`ClientError`.
            msgpack: send ``application/msgpack`` instead (same meaning on the broker).

        Returns:
            The event's id.

        Raises:
            TypeError: ``data`` is bytes or not serialisable.
            ClientError: 4xx (bad topic, bad event type, body too large...).
            ServerError: 5xx; not retried (the event may be stored).
            BrokerUnavailable: no node could be connected to, or the connection broke after the
                request was sent (outcome unknown).
            BrokerTimeout: the answer did not come within ``timeout`` (outcome unknown).
        """
        request = single_request(
            topic, data, event=event, retain=retain, final=final, use_msgpack=msgpack
        )
        return answer_id(await self._send(request))

    async def publish_batch(
        self, items: Iterable[PublishItem], *, msgpack: bool = False
    ) -> list[str]:
        """Publish several events atomically (all are stored, or none).

        Args:
            items: the events, in order.
            msgpack: send the batch as msgpack instead of JSON.

        Returns:
            The ids, in the order of ``items``.

        Raises:
            ValueError: no items.
            TypeError, ClientError, ServerError, BrokerUnavailable, BrokerTimeout: as
                :meth:`publish`.
        """
        request = batch_request(items, use_msgpack=msgpack)
        return answer_ids(await self._send(request))

    def subscribe(
        self,
        topics: str | Sequence[str],
        *,
        transport: Literal["sse", "ws", "auto"] = "auto",
        last_event_id: str | None = None,
        last: int | None = None,
        since: float | datetime | None = None,
    ) -> Subscription:
        """Create a subscription; enter it with ``async with`` to connect.

        Args:
            topics: a topic or a list of topics.
            transport: ``"sse"``, ``"ws"``, or ``"auto"`` (SSE, falling back to WebSocket when
                SSE cannot be opened; see the README for the exact rule).
            last_event_id: resume after this id (from :attr:`Subscription.last_event_id` or an
                earlier :class:`Event`); ``None`` starts live.
            last: without ``last_event_id``, first replay the newest ``last`` events.
            since: without ``last_event_id``, first replay the events of the last ``since``
                seconds, or since a timezone-aware ``datetime``.

        Returns:
            The (not yet connected) subscription. See :class:`Subscription` for what it raises.

        Raises:
            ValueError: a bad ``transport``, no topic, or a naive ``datetime``.
        """
        options: list[tuple[str, str]] = []
        if last is not None:
            options.append(("last", str(int(last))))
        if isinstance(since, datetime):
            if since.tzinfo is None:
                raise ValueError("since needs a timezone-aware datetime")
            options.append(("since", since.isoformat()))
        elif since is not None:
            options.append(("since", repr(float(since))))
        return Subscription(
            self._urls,
            [topics] if isinstance(topics, str) else list(topics),
            transport=transport,
            last_event_id=last_event_id,
            start_options=options,
            timeout=self._timeout,
            heartbeat_timeout=self._heartbeat_timeout,
            backoff=self._backoff,
            max_backoff=self._max_backoff,
            rng=self._rng,
            headers=self._headers,
        )

    async def _send(self, request: Request) -> dict[str, Any]:
        failures: list[str] = []
        last: httpx.TransportError | None = None
        for offset in range(len(self._urls)):
            index = (self._preferred + offset) % len(self._urls)
            url = self._urls[index]
            try:
                response = await self._http.post(
                    url + request.path,
                    params=request.params,
                    headers=request.headers,
                    content=request.body,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failures.append(f"{url}: {exc or type(exc).__name__}")
                last = exc
                continue
            except httpx.TransportError as exc:
                raise _sent_error(url, exc, self._timeout) from exc
            self._preferred = index
            return parse_answer(response.status_code, response.content)
        raise BrokerUnavailable("no broker reachable: " + "; ".join(failures)) from last


def publish(
    urls: str | Sequence[str],
    topic: str,
    data: Any,
    *,
    event: str | None = None,
    retain: bool = False,
    final: bool = False,
    msgpack: bool = False,
    timeout: float = TIMEOUT_SECONDS,
    token: str | None = None,
) -> str:
    """Publish one event from synchronous code (no event loop needed; uses ``httpx.Client``).

    Args:
        urls: one base URL or a list (tried in order while connections are refused).
        topic: the topic.
        data: ``str`` for text, any other JSON-serialisable value for JSON; not ``bytes``.
        event: the event type, or ``None``.
        retain: keep it as the topic's current state for its type.
        final: close the topic after it.
        msgpack: send ``application/msgpack``.
        timeout: seconds for the request.
        token: a JWT, sent as ``Authorization: Bearer``.

    Returns:
        The event's id.

    Raises:
        ValueError, TypeError, ClientError, ServerError, BrokerUnavailable, BrokerTimeout: as
            :meth:`BrokerClient.publish`.
    """
    nodes = normalize_urls(urls)
    request = single_request(
        topic, data, event=event, retain=retain, final=final, use_msgpack=msgpack
    )
    failures: list[str] = []
    last: httpx.TransportError | None = None
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(timeout=timeout, headers=headers) as http:
        for url in nodes:
            try:
                response = http.post(
                    url + request.path,
                    params=request.params,
                    headers=request.headers,
                    content=request.body,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failures.append(f"{url}: {exc or type(exc).__name__}")
                last = exc
                continue
            except httpx.TransportError as exc:
                raise _sent_error(url, exc, timeout) from exc
            return answer_id(parse_answer(response.status_code, response.content))
    raise BrokerUnavailable("no broker reachable: " + "; ".join(failures)) from last


def _sent_error(url: str, exc: httpx.TransportError, timeout: float) -> BrokerError:
    if isinstance(exc, httpx.TimeoutException):
        return BrokerTimeout(
            f"{url} did not answer within {timeout} s; the event may or may not be stored"
        )
    return BrokerUnavailable(
        f"connection to {url} failed after the request was sent ({type(exc).__name__}: {exc}); "
        "the event may or may not be stored"
    )
