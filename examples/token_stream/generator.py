"""A fake answer generator: no network, no model, just tokens on a timer.

Events on ``answers/<answer id>``:

- ``token``: the token's text as plain text (``text/plain``), e.g. ``" 구조적"``. Tokens carry
  their leading spaces and line breaks; concatenated they are the answer.
- ``done`` with ``final=1``: ``{"tokens", "chars", "finish_reason": "stop"}``. Final: the topic
  closes, subscribers get ``broker.end`` and their stream ends, so even ``curl -N`` exits.
- ``generation.failed`` with ``final=1`` instead, when generation fails midway:
  ``{"tokens", "error": {"code", "message"}}``. Never ``error``: that name is reserved (a
  browser's EventSource fires its own error handler for it).
"""

from __future__ import annotations

import re
from typing import Any, Final

import trio
from broker_client import BrokerClient

TOKEN_EVENT: Final = "token"
DONE_EVENT: Final = "done"
FAILED_EVENT: Final = "generation.failed"

ANSWER: Final = """\
구조적 동시성(structured concurrency)은 모든 작업에 주인이 있다는 원칙입니다.
In Trio, a task runs inside a nursery, and the nursery does not exit until every task in it \
has finished, so no task can outlive the code that started it.

그래서 취소와 오류가 예측 가능하게 전파됩니다: 자식 작업이 실패하면 형제 작업이 취소되고, \
오류는 부모에게 올라갑니다.
That is why this broker gives every connection its own nursery: when a client goes away, \
its writer, heartbeat and subscriptions end together. ✓
"""


def tokenize(text: str) -> list[str]:
    """Split text into LLM-like tokens: leading whitespace, then up to four characters.

    Joining the tokens gives the text back exactly.
    """
    return re.findall(r"\s*\S{1,4}|\s+$", text)


def answer_topic(answer_id: str) -> str:
    """The topic an answer streams on."""
    return f"answers/{answer_id}"


async def generate(
    client: BrokerClient,
    answer_id: str,
    *,
    delay: float,
    text: str = ANSWER,
    fail_after: int | None = None,
) -> dict[str, Any]:
    """Stream ``text`` as ``token`` events, then ``done`` (or ``generation.failed``).

    Args:
        client: where to publish.
        answer_id: events go to ``answers/<answer_id>``.
        delay: seconds between two tokens.
        text: the answer.
        fail_after: fail with ``generation.failed`` after this many tokens.

    Returns:
        The data of the final event.
    """
    topic = answer_topic(answer_id)
    tokens = tokenize(text)
    for index, token in enumerate(tokens):
        if index == fail_after:
            failure = {
                "tokens": index,
                "error": {"code": "model_overloaded", "message": "the model is overloaded"},
            }
            await client.publish(topic, failure, event=FAILED_EVENT, final=True)
            return failure
        if index:
            await trio.sleep(delay)
        await client.publish(topic, token, event=TOKEN_EVENT)
    done = {"tokens": len(tokens), "chars": len(text), "finish_reason": "stop"}
    await client.publish(topic, done, event=DONE_EVENT, final=True)
    return done
