"""The alerts an operations team browses, and a generator that publishes fake ones.

Events on the alerts topic (``alerts`` by default):

- ``new_event``: ``{"id", "severity", "title": {"ko", "en"}, "source", "at"}``, published by
  the generator (any monitoring system would do the same POST).
- ``ack_event``: ``{"id", "by", "at"}``, published by the page when someone acknowledges an
  alert (``POST /topics/alerts?event=ack_event`` from the browser).
- ``summary`` with ``retain=1``: ``{"unacked": {"critical", "warning", "info"}, "total",
  "updated_at"}``, republished by the summary service (``summary.py``) on every change, so a
  page that opens gets the current counts first, whatever its time window.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

import trio
from broker_client import BrokerClient

from .._shared import new_id, utc_now

DEFAULT_TOPIC: Final = "alerts"
NEW_EVENT: Final = "new_event"
ACK_EVENT: Final = "ack_event"
SUMMARY_EVENT: Final = "summary"
SEVERITIES: Final = ("critical", "warning", "info")

#: (severity, Korean title, English title, source): what the fake monitoring reports.
CATALOG: Final = (
    ("critical", "결제 API 응답 시간 초과", "Payment API timing out", "api-gateway"),
    ("critical", "주 데이터베이스 복제 중단", "Primary database replication stopped", "db-01"),
    ("warning", "디스크 사용량 85% 초과", "Disk usage above 85 %", "worker-3"),
    ("warning", "큐 지연 증가", "Queue latency rising", "jobs-queue"),
    ("warning", "인증서 만료 7일 전", "Certificate expires in 7 days", "edge-lb"),
    ("info", "배포 완료: search v2.4.1", "Deployed search v2.4.1", "ci"),
    ("info", "야간 백업 완료", "Nightly backup finished", "backup"),
)


def make_alert(rng: random.Random, severity: str | None = None) -> dict[str, Any]:
    """One fake alert (``new_event`` data); ``severity`` picks among that severity's kinds."""
    choices = [c for c in CATALOG if severity in (None, c[0])]
    kind, ko, en, source = rng.choice(choices)
    return {
        "id": f"evt-{new_id()}",
        "severity": kind,
        "title": {"ko": ko, "en": en},
        "source": source,
        "at": utc_now(),
    }


async def publish_alert(client: BrokerClient, topic: str, alert: dict[str, Any]) -> str:
    """Publish one alert as ``new_event``; returns the broker's event id."""
    return await client.publish(topic, alert, event=NEW_EVENT)


async def acknowledge(client: BrokerClient, topic: str, alert_id: str, by: str) -> str:
    """Publish ``ack_event`` for an alert (what the page's Acknowledge button does)."""
    return await client.publish(topic, {"id": alert_id, "by": by, "at": utc_now()}, event=ACK_EVENT)


async def generate_alerts(
    client: BrokerClient,
    topic: str,
    *,
    rng: random.Random,
    interval: float,
    count: int | None = None,
    on_alert: Callable[[dict[str, Any]], object] = lambda alert: None,
) -> None:
    """Publish fake alerts forever (or ``count`` of them), ``interval`` seconds apart."""
    sent = 0
    while count is None or sent < count:
        if sent:
            await trio.sleep(interval)
        alert = make_alert(rng)
        await publish_alert(client, topic, alert)
        on_alert(alert)
        sent += 1
