"""The summary service: keeps the unacked alerts and republishes the count on every change.

It subscribes to the alerts topic with the client library, applies each ``new_event`` and
``ack_event`` to an :class:`AlertBook`, and publishes the new ``summary`` with ``retain=1``
whenever the counts change. Pages never compute the bell's number themselves: they show the
retained summary, so every page agrees, including one that only loads the last hour.

The book lives in memory: a restarted service starts from zero (and says so by publishing an
empty summary). A real one would load its state from its database first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio
from broker_client import BrokerClient, Event

from .._shared import say, utc_now
from .alerts import ACK_EVENT, NEW_EVENT, SEVERITIES, SUMMARY_EVENT


@dataclass
class AlertBook:
    """The unacked alerts by id (sans-IO). Acks are idempotent; unknown ids are ignored."""

    unacked: dict[str, str] = field(default_factory=dict)  # alert id -> severity
    acked: set[str] = field(default_factory=set)

    def add(self, alert: Any) -> bool:
        """Record a ``new_event``; returns whether the counts changed."""
        if not isinstance(alert, dict):
            return False
        alert_id, severity = alert.get("id"), alert.get("severity")
        if not isinstance(alert_id, str) or severity not in SEVERITIES:
            return False
        if alert_id in self.unacked or alert_id in self.acked:
            return False
        self.unacked[alert_id] = severity
        return True

    def ack(self, ack: Any) -> bool:
        """Record an ``ack_event``; returns whether the counts changed."""
        alert_id = ack.get("id") if isinstance(ack, dict) else None
        if not isinstance(alert_id, str) or alert_id not in self.unacked:
            return False
        del self.unacked[alert_id]
        self.acked.add(alert_id)
        return True

    def summary(self) -> dict[str, Any]:
        """The ``summary`` event's data."""
        counts = dict.fromkeys(SEVERITIES, 0)
        for severity in self.unacked.values():
            counts[severity] += 1
        return {"unacked": counts, "total": len(self.unacked), "updated_at": utc_now()}


async def serve_summary(
    client: BrokerClient,
    topic: str,
    *,
    book: AlertBook | None = None,
    task_status: trio.TaskStatus[AlertBook] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep the summary of ``topic`` up to date until cancelled.

    Reports started (with its :class:`AlertBook`) once its subscription is live and the
    first summary is published, so alerts published after that are all counted.
    """
    book = book or AlertBook()
    async with client.subscribe(topic) as events:
        await client.publish(topic, book.summary(), event=SUMMARY_EVENT, retain=True)
        task_status.started(book)
        async for item in events:
            if not isinstance(item, Event):
                say(f"summary: {item}")  # reconnecting, reset...: the stream goes on
                continue
            if item.event == NEW_EVENT:
                changed = book.add(item.data)
            elif item.event == ACK_EVENT:
                changed = book.ack(item.data)
            else:
                continue  # our own summaries
            if changed:
                await client.publish(topic, book.summary(), event=SUMMARY_EVENT, retain=True)
