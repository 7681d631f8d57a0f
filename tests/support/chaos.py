"""The chaos tests' shared bookkeeping and checker (issue 20).

Publishers record what was acknowledged, subscribers record what they received; one
checker judges both the mesh chaos test (``tests/cluster/test_chaos.py``) and the Redis one
(``tests/redis/test_redis_chaos.py``). An event is ``(p, n, tag)``: publisher ``p``'s
``n``-th publish; ``tag`` names the order that must hold (the mesh: the origin incarnation
that took it, per-origin FIFO; Redis: its topic, per-topic order).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import trio

MAX_ID_CHARS = 64


@dataclass
class Published:
    acked: dict[tuple[int, int], str] = field(default_factory=dict)  # (p, n) -> tag
    refused: int = 0
    failed: int = 0


@dataclass
class Received:
    events: list[tuple[int, int, str]] = field(default_factory=list)  # (p, n, tag)
    notices: Counter = field(default_factory=Counter)
    connects: int = 0
    longest_id: int = 0
    last_id: str | None = None


def check_subscribers(
    acked: dict[tuple[int, int], str], received: list[Received], report: dict[str, object]
) -> list[str]:
    """Fill ``report`` per subscriber; return the problems: an acknowledged event missing,
    one delivered twice, one out of its publisher's order within its tag, an id too long."""
    problems = []
    for k, record in enumerate(received):
        counts = Counter((p, n) for p, n, _ in record.events)
        duplicates = sum(c - 1 for c in counts.values() if c > 1)
        missing = [key for key in acked if key not in counts]
        gaps = record.notices["broker.gap"] + record.notices["broker.reset"]
        out_of_order = 0
        last: dict[tuple[int, str], int] = {}
        for p, n, tag in record.events:
            if n <= last.get((p, tag), 0):
                out_of_order += 1
            last[(p, tag)] = max(n, last.get((p, tag), 0))
        report[f"subscriber {k}"] = {
            "delivered": len(record.events),
            "missing_acknowledged": len(missing),
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "gaps_reported": gaps,
            "dropped_notices": record.notices["broker.dropped"],
            "connects": record.connects,
            "longest_id": record.longest_id,
        }
        if missing:
            problems.append(f"subscriber {k} missed {len(missing)} acked, e.g. {missing[:5]}")
        if duplicates:
            problems.append(f"subscriber {k} got {duplicates} duplicates")
        if out_of_order:
            problems.append(f"subscriber {k}: {out_of_order} events out of origin order")
        if record.longest_id > MAX_ID_CHARS:
            problems.append(f"subscriber {k}: an id of {record.longest_id} characters")
    return problems


async def wait_all_delivered(
    published: Published, received: list[Received], timeout: float
) -> None:
    """Give the subscribers up to ``timeout`` seconds to receive every acknowledged event.

    Polled, not slept: it returns as soon as they have; the checker judges what arrived.
    """
    acked = set(published.acked)
    with trio.move_on_after(timeout):
        while any(not acked <= {(p, n) for p, n, _ in record.events} for record in received):
            await trio.sleep(0.2)
