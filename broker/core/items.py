"""What the edge hands to the hub to publish: one validated event, before it has an id."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PublishItem"]


class PublishItem(NamedTuple):
    """One event to publish, already validated at the edge.

    A named tuple: a batch makes one per event, and a frozen dataclass's ``__init__`` cost
    ~7 % of a batch publish (py-spy, load/ publish scenario).
    """

    topic: str
    data: str
    event_type: str | None = None
    is_json: bool = False
