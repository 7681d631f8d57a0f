"""The engine's health: degraded on any failure, the supervisor reconnects and catches up.

Any Redis error marks the engine *degraded*: every subscriber gets ``broker.degraded``
(streams stay open with heartbeats), publishes and new streams are refused with ``503``.
The supervisor drops every pooled connection (a hung server, or on Sentinel a demoted or
unreachable primary, keeps them open), reconnects with jittered exponential backoff of at
most ``RECONNECT_MAX_SECONDS`` (on Sentinel, to whichever server the sentinels name now),
subscribes to every tracked topic again and reads each stream from its last entry: the
events missed meanwhile are delivered in order, once, then ``broker.recovered``.
"""

from __future__ import annotations

import logging
import math
import random

import trio

from ...hub import Unavailable
from .base import BACKOFF_MIN_SECONDS, RECONNECT_MAX_SECONDS, EngineBase
from .connection import FAILURES, first_leaf, startup_error

log = logging.getLogger(__name__)


class Health(EngineBase):
    """Degraded or not, and the supervisor task that brings the engine back."""

    def _unavailable(self) -> Unavailable:
        wait = max(1.0, self.retry_at - trio.current_time())
        return Unavailable("the event store (Redis) is unreachable; retry later", wait)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.healthy:
            self.healthy = False
            self.retry_at = trio.current_time() + self.backoff
            log.warning("%s: unreachable (%s); publishes get 503 until it is back", self, exc)
            self.hub.notify(None, "broker.degraded", {"reason": "store unreachable"})
        self._trouble.set()

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
            if failure is not None and trio.current_effective_deadline() != -math.inf:
                if not self._started:
                    raise startup_error(self.address, failure)
                self._failed(failure)
            self._pubsub = None
            if trio.current_effective_deadline() != -math.inf:
                self._drop_connections()
            delay = self.backoff * random.uniform(0.5, 1.0)
            self.retry_at = trio.current_time() + delay
            await trio.sleep(delay)
            self.backoff = min(
                self.backoff * 2, self.options.backoff_max_seconds, RECONNECT_MAX_SECONDS
            )
            self.reconnects += 1

    def _drop_connections(self) -> None:
        """Close every pooled connection, so the next session and commands open new ones.

        A connection the server never closed would otherwise be handed out again: to a
        hung server, or on Sentinel to the old primary, which new connections would not
        reach (each asks the sentinels where the primary is, and checks its role).
        """
        self.client.connection_pool.disconnect()

    async def _session(self, task_status: trio.TaskStatus[None] | None) -> None:
        factory = self.client.sharded_pubsub if self.clustered else self.client.pubsub
        async with factory(
            retry_policy=None,
            ignore_subscribe_messages=True,
            subscription_timeout=self.options.timeout_seconds,
            # A node that only listens learns of a hung server by this PING, not from a
            # publish: ask after this much silence (coredis waits 15 s by default).
            max_idle_seconds=self.options.timeout_seconds,
        ) as pubsub:
            channels = {self._stream(t): self._on_message for t in self.caches}
            if channels:
                with trio.fail_after(self.options.timeout_seconds):
                    await pubsub.subscribe(**channels)
            self._pubsub = pubsub
            await self._read([t for t, c in self.caches.items() if c.ready])
            if not self.healthy:
                self.healthy = True
                log.info("%s: reachable again; caught up", self)
                self.hub.notify(None, "broker.recovered", {})
            self.backoff = BACKOFF_MIN_SECONDS
            if task_status is not None:
                task_status.started()
                self._started = True
            await self._trouble.wait()
            self._pubsub = None
