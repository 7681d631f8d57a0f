"""A Python consumer of an answer stream, with the client library.

It subscribes with ``last=1000`` (the broker's default history per topic), so it gets the
answer from its first token whenever it joins: before the generator starts (``async with
client.subscribe(...)`` returns once the stream is live, so nothing is missed), in the middle,
or after the end. It writes each token as it arrives and returns at ``done`` or
``generation.failed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import trio
from broker_client import BrokerClient, Event

from .generator import DONE_EVENT, FAILED_EVENT, TOKEN_EVENT, answer_topic

HISTORY: Final = 1000
"""Events to replay first: the broker's default ``[history] size``."""


@dataclass
class Answer:
    """What a consumer received."""

    tokens: list[str] = field(default_factory=list)
    outcome: str | None = None  # "done" or "generation.failed"
    final: Any = None  # the final event's data

    @property
    def text(self) -> str:
        return "".join(self.tokens)


async def consume(
    client: BrokerClient,
    answer_id: str,
    *,
    out: TextIO | None = None,
    answer: Answer | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> Answer:
    """Receive one answer; print its tokens to ``out`` as they arrive.

    Reports started once the subscription is live (start the generator after that).

    Args:
        client: where to subscribe.
        answer_id: the answer to follow.
        out: where to write each token as it arrives.
        answer: fill this :class:`Answer` (for a caller that runs this in a nursery).

    Returns:
        The tokens and the final event.
    """
    answer = answer if answer is not None else Answer()
    async with client.subscribe(answer_topic(answer_id), last=HISTORY) as events:
        task_status.started()
        async for item in events:
            if not isinstance(item, Event):
                continue  # notices: reconnecting and resuming are the library's job
            if item.event == TOKEN_EVENT:
                answer.tokens.append(item.data)
                if out is not None:
                    out.write(item.data)
                    out.flush()
            elif item.event in (DONE_EVENT, FAILED_EVENT):
                answer.outcome, answer.final = item.event, item.data
                break
    return answer
