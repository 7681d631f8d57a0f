"""Publishing on Redis: the atomic publish script, and the admin operations.

:meth:`Publishing.append` runs :data:`~.entries.PUBLISH_LUA` (one call per request, so a
batch is atomic) and answers once Redis has stored the events: a ``202`` is only ever
given for an event Redis holds. If Redis cannot be reached (or does not answer within
``timeout_seconds``), the publish is refused with ``503`` and ``Retry-After``; while the
engine is degraded (on Redis Cluster: while the topic's shard is down, ``shards.py``),
publishes are refused at once without trying.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import trio
from coredis.exceptions import ResponseError

from ...core.errors import ClientError, TopicClosed
from ...hub import PublishItem
from . import entries, ids
from .base import EngineBase
from .connection import FAILURES


class BatchSpansSlots(ClientError):
    """On Redis Cluster a batch can only be atomic within one topic's slot."""

    status = 400
    code = "batch_spans_slots"


class Publishing(EngineBase):
    """Storing events and changing a topic's stored state for every node."""

    async def append(
        self, items: Sequence[PublishItem], *, retain: bool = False, final: bool = False
    ) -> list[str]:
        """Store events atomically; return their ids (see module docstring).

        Raises:
            Unavailable: Redis is unreachable or the engine is degraded: nothing stored.
            TopicClosed: a topic was closed by a final event (nothing stored).
            BatchSpansSlots: on Redis Cluster, a batch names more than one topic.
        """
        topics = list(dict.fromkeys(item.topic for item in items))
        if self.clustered and len(topics) > 1:
            raise BatchSpansSlots(
                "on Redis Cluster a batch is atomic only within one topic: "
                f"this one names {len(topics)} topics"
            )
        self._check(topics)
        keys, args, order = entries.publish_arguments(
            self.options.key_prefix,
            self.options.history_size,
            self._publish_command,
            int(time.time() * 1000),
            [
                (
                    item.topic,
                    item.data,
                    item.event_type,
                    entries.flags(is_json=item.is_json, retain=retain, final=final),
                )
                for item in items
            ],
        )
        started = trio.current_time()
        try:
            with trio.fail_after(self.options.timeout_seconds):
                stored = await self._script(keys, args)
        except ResponseError as exc:
            message = str(exc)
            if entries.CLOSED_ERROR in message:
                index = int(message.rsplit(" ", 1)[-1]) - 1
                raise TopicClosed(f"topic {order[index]!r} was closed by a final event") from None
            self._failed(exc, self._stream(topics[0]) if self.clustered and topics else None)
            raise self._unavailable() from None
        except FAILURES as exc:
            self._failed(exc, self._stream(topics[0]) if self.clustered and topics else None)
            raise self._unavailable() from None
        self.appends += 1
        self.last_commit_seconds = trio.current_time() - started
        self.commit_latency.observe(self.last_commit_seconds)
        self.published += len(items)
        return [
            ids.token(ids.tag(item.topic), ids.pack(entry_id))
            for item, entry_id in zip(items, stored, strict=True)
        ]

    async def clear_retained(self, topic: str, event_type: Any = ...) -> int:
        """Forget a topic's retained events (one type, or all) on every node.

        Raises:
            Unavailable: Redis is unreachable.
        """
        field = "*" if event_type is ... else (event_type or "")
        return int(await self._admin(topic, "clear", field))

    async def forget(self, topic: str) -> bool:
        """Forget a topic's history, retained events and closed state on every node.

        Nodes that follow the topic find their last entry gone and tell its subscribers
        (``broker.reset``); the topic can be published to again.

        Raises:
            Unavailable: Redis is unreachable.
        """
        return bool(await self._admin(topic, "forget", ""))

    async def _admin(self, topic: str, operation: str, field: str) -> Any:
        self._check([topic])
        try:
            with trio.fail_after(self.options.timeout_seconds):
                return await self._admin_script(
                    [self._stream(topic), self._meta(topic)],
                    [operation, field, self._publish_command],
                )
        except FAILURES as exc:
            self._failed(exc, self._stream(topic))
            raise self._unavailable() from None
