"""The engine's health: degraded on any failure, the supervisor reconnects and catches up.

Any Redis error marks the engine *degraded*: every subscriber gets ``broker.degraded``
(streams stay open with heartbeats), publishes and new streams are refused with ``503``.
The supervisor drops every pooled connection (a hung server, or on Sentinel a demoted or
unreachable primary, keeps them open), reconnects with jittered exponential backoff of at
most ``RECONNECT_MAX_SECONDS`` (on Sentinel, to whichever server the sentinels name now),
subscribes to every tracked topic again and reads each stream from its last entry: the
events missed meanwhile are delivered in order, once, then ``broker.recovered``.

On Redis Cluster health is per shard (``shards.py``): a command that fails for a topic
marks only the master of its slot down, and only that master's topics get ``503`` and
``broker.degraded``. When the live connection (sharded pub/sub, one connection per master)
fails, the supervisor pings every master and marks down those that do not answer; the
engine as a whole is degraded only if they all answer (the failure was not one shard's).
Each session then subscribes on the masters that are up only, and pings the ones that are
down every ``RECONNECT_MAX_SECONDS``; once one answers, the next session subscribes to its
topics again, reads each from its last entry, and tells them ``broker.recovered``.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import trio

from ...hub import Unavailable
from .base import BACKOFF_MIN_SECONDS, RECONNECT_MAX_SECONDS, EngineBase
from .connection import FAILURES, first_leaf, startup_error, tls_context

log = logging.getLogger(__name__)


class Health(EngineBase):
    """Degraded or not (per shard on Redis Cluster), and the supervisor that brings it back."""

    _recovering: frozenset[str] = frozenset()  # masters back up, their topics not yet told

    def _unavailable(self, node: str | None = None) -> Unavailable:
        wait = max(1.0, self.retry_at - trio.current_time())
        if node is not None:
            return Unavailable(
                f"the event store's shard {node} (Redis Cluster) is unreachable; retry later", wait
            )
        return Unavailable("the event store (Redis) is unreachable; retry later", wait)

    def _failed(self, exc: BaseException, key: str | None = None) -> None:
        """A Redis call failed; ``key``: on Cluster, the key it was for (its shard is down)."""
        self.failures += 1
        if self.shards is not None:
            if key is not None:
                self._shard_down(self.shards.node_of(key), exc)
            self._trouble.set()  # the supervisor pings the masters: which ones are down
            return
        self._degrade(exc)

    def _degrade(self, exc: BaseException) -> None:
        if self.healthy:
            self.healthy = False
            self.retry_at = trio.current_time() + self.backoff
            log.warning("%s: unreachable (%s); publishes get 503 until it is back", self, exc)
            self.hub.notify(None, "broker.degraded", {"reason": "store unreachable"})
        self._trouble.set()

    def _shard_down(self, node: str, exc: BaseException | None) -> None:
        assert self.shards is not None
        now = trio.current_time()
        if self.shards.mark_down(node, now):
            self.retry_at = now + RECONNECT_MAX_SECONDS
            log.warning(
                "%s: shard %s unreachable (%s); its topics get 503 until it is back",
                self,
                node,
                exc or "no answer to PING",
            )
            for topic in self._topics_on(node):
                self.hub.notify(
                    topic, "broker.degraded", {"reason": "store unreachable", "shard": node}
                )

    def _topics_on(self, node: str) -> list[str]:
        assert self.shards is not None
        return self.shards.on(node, ((t, self._stream(t)) for t in self.caches))

    async def _supervisor_task(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep the notification connection up; after each reconnection, catch every topic up."""
        while True:
            self._trouble = trio.Event()
            failure: BaseException | None = None
            try:
                await self._session(None if self._started else task_status)
            except* FAILURES as group:
                failure = first_leaf(group)
            # A connection closed under us while we are being cancelled is no failure.
            live = trio.current_effective_deadline() != -math.inf
            if failure is not None and live:
                self.failures += 1
            if live and self.shards is not None and self._started:
                if not await self._probe_shards() and failure is not None:
                    self._degrade(failure)  # every master answers: not one shard's failure
            elif failure is not None and live:
                if not self._started:
                    raise startup_error(self.address, failure)
                self._degrade(failure)
            self._pubsub = None
            if live and self.shards is None:  # on Cluster it would cut other shards' calls
                self._drop_connections()
            delay = self.backoff * random.uniform(0.5, 1.0)
            self.retry_at = trio.current_time() + delay
            await trio.sleep(delay)
            self.backoff = min(
                self.backoff * 2, self.options.backoff_max_seconds, RECONNECT_MAX_SECONDS
            )
            self.reconnects += 1

    async def _probe_shards(self) -> bool:
        """Ping every master that is up: mark down those that do not answer.

        Returns whether any master is down now. (Those already down are pinged by
        :meth:`_watch_shards_task`.)
        """
        assert self.shards is not None
        down = self.shards.down
        nodes = [n.name for n in self.client.connection_pool.cluster_layout.primaries]
        answered: dict[str, bool] = {}

        async def probe(node: str) -> None:
            answered[node] = await self._answers(node)

        async with trio.open_nursery() as nursery:
            for node in nodes:
                if node not in down:
                    nursery.start_soon(probe, node)
        for node, ok in answered.items():
            if not ok:
                self._shard_down(node, None)
        return bool(down)

    async def _answers(self, node: str) -> bool:
        """Whether the master ``node`` (``host:port``) answers a ``PING`` now."""
        layout = self.client.connection_pool.cluster_layout
        location = next((n for n in layout.nodes if n.name == node), None)
        if location is None:
            return False
        timeout = self.options.timeout_seconds
        client = location.as_client(
            decode_responses=True,
            username=self.address.username,
            password=self.address.password,
            ssl_context=tls_context(self.options) if self.address.tls else None,
            connect_timeout=timeout,
            stream_timeout=timeout,
        )
        answered = False
        try:
            with trio.fail_after(timeout):
                async with client:  # its task group wraps a failure in a group
                    await client.ping()
                    answered = True
        except* FAILURES:
            pass
        return answered

    async def _watch_shards_task(self) -> None:
        """While masters are down, ping them; when one answers, mark it up, end the session."""
        assert self.shards is not None
        while True:
            await trio.sleep(RECONNECT_MAX_SECONDS)
            layout = self.client.connection_pool.cluster_layout
            for node in list(self.shards.down):
                # A master no longer in the slot map (failed over to a replica, which the
                # client found) is nothing to wait for: its slots have a new owner.
                gone = all(n.name != node for n in layout.primaries)
                if gone or await self._answers(node):
                    # Publishes to it go on now; new streams wait for the next session,
                    # whose pub/sub has a connection to it (this one has none).
                    self._pubsub = None
                    self.shards.mark_up(node)
                    self._recovering = self._recovering | {node}
                    self._trouble.set()
                    return

    def _drop_connections(self) -> None:
        """Close every pooled connection, so the next session and commands open new ones.

        A connection the server never closed would otherwise be handed out again: to a
        hung server, or on Sentinel to the old primary, which new connections would not
        reach (each asks the sentinels where the primary is, and checks its role).
        """
        self.client.connection_pool.disconnect()

    def _pubsub_factory(self) -> Any:
        if self.shards is None:
            return self.client.pubsub
        down = frozenset(self.shards.down)

        def sharded(**kwargs: Any) -> Any:
            pubsub = self.client.sharded_pubsub(**kwargs)
            if down:  # connect to (and subscribe on) the masters that are up only
                pubsub.connection_pool = _PoolWithout(pubsub.connection_pool, down)
            return pubsub

        return sharded

    async def _session(self, task_status: trio.TaskStatus[None] | None) -> None:
        shards = self.shards
        async with self._pubsub_factory()(
            retry_policy=None,
            ignore_subscribe_messages=True,
            subscription_timeout=self.options.timeout_seconds,
            # A node that only listens learns of a hung server by this PING, not from a
            # publish: ask after this much silence (coredis waits 15 s by default).
            max_idle_seconds=self.options.timeout_seconds,
        ) as pubsub:
            up = [t for t in self.caches if shards is None or not shards.is_down(self._stream(t))]
            channels = {self._stream(t): self._on_message for t in up}
            if channels:
                with trio.fail_after(self.options.timeout_seconds):
                    await pubsub.subscribe(**channels)
            self._pubsub = pubsub
            # The idle sweep may have dropped a topic while we subscribed: read what is left.
            await self._read([t for t in up if (c := self.caches.get(t)) is not None and c.ready])
            if not self.healthy:
                self.healthy = True
                log.info("%s: reachable again; caught up", self)
                self.hub.notify(None, "broker.recovered", {})
            for node in sorted(self._recovering):
                log.info("%s: shard %s reachable again; caught up", self, node)
                for topic in self._topics_on(node):
                    self.hub.notify(topic, "broker.recovered", {"shard": node})
            self._recovering = frozenset()
            self.backoff = BACKOFF_MIN_SECONDS
            if task_status is not None:
                task_status.started()
                self._started = True
            async with trio.open_nursery() as nursery:
                if shards is not None and shards.down:
                    nursery.start_soon(self._watch_shards_task)
                await self._trouble.wait()
                nursery.cancel_scope.cancel()
            self._pubsub = None


class _PoolWithout:
    """A cluster connection pool as a sharded pub/sub sees it, less the masters ``down``."""

    def __init__(self, pool: Any, down: frozenset[str]) -> None:
        self._pool = pool
        self.cluster_layout = _LayoutWithout(pool.cluster_layout, down)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class _LayoutWithout:
    def __init__(self, layout: Any, down: frozenset[str]) -> None:
        self._layout = layout
        self._down = down

    @property
    def primaries(self) -> list[Any]:
        return [n for n in self._layout.primaries if n.name not in self._down]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._layout, name)
