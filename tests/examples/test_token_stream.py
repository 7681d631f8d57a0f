"""Example 3, token stream (``examples/token_stream``): an answer streamed token by token.

Against a real broker process: the command (generator + Python consumer with the client
library), the GET-only consumer with ``?last=`` and ``?last_event_id=`` (what the README's curl
commands do), a failure as ``generation.failed``, and the page rendering the text as it
arrives, and after the fact.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any
from urllib.parse import quote

import pytest
import trio
from broker_client import BrokerClient

from examples._shared import new_id, page_url
from examples.token_stream.consumer import Answer, consume
from examples.token_stream.generator import ANSWER, answer_topic, generate, tokenize
from tests.examples.conftest import js, read_stream
from tests.support.servers import ROOT

TOKENS = tokenize(ANSWER)


def test_tokens_join_back_into_the_answer() -> None:
    assert "".join(TOKENS) == ANSWER
    assert len(TOKENS) > 50
    assert all(token.strip() or token == TOKENS[-1] for token in TOKENS)
    assert TOKENS[:3] == ["구조적", " 동시성(", "stru"]


async def test_command_streams_the_answer_to_a_python_consumer(broker_process: Any) -> None:
    """``python -m examples.token_stream`` prints the answer as its consumer (the client
    library) receives it, and the curl command for the same answer."""
    answer_id = new_id()
    command = [sys.executable, "-m", "examples.token_stream", "--url", broker_process.url]
    command += ["--answer", answer_id, "--delay", "0"]
    with trio.fail_after(30):
        process = await trio.run_process(
            command, cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False
        )
    stderr = process.stderr.decode()
    assert process.returncode == 0, stderr
    assert process.stdout.decode() == ANSWER + "\n"
    topic_url = f"{broker_process.url}/topics/answers/{answer_id}/events"
    assert f"curl -N '{topic_url}?last=1000'" in stderr
    assert f"done: {len(TOKENS)} tokens" in stderr


async def test_command_follows_a_finished_answer_from_its_first_token(
    broker_process: Any,
) -> None:
    """``--follow ID``: the consumer (``last=1000``) prints an answer streamed before."""
    answer_id = new_id()
    with trio.fail_after(30):
        async with BrokerClient(broker_process.url) as client:
            await generate(client, answer_id, delay=0)
        command = [sys.executable, "-m", "examples.token_stream", "--url", broker_process.url]
        process = await trio.run_process(
            [*command, "--follow", answer_id],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout.decode() == ANSWER + "\n"


async def test_get_only_consumer_with_last_and_last_event_id(broker_process: Any) -> None:
    """The query string is all a GET-only client needs: ``?last=1000`` replays the answer
    from its first token, ``?last_event_id=`` resumes after a token, ``?last=N`` gives the
    newest N events; each stream ends by itself after ``done``; resuming from ``done`` is 204."""
    answer_id = new_id()
    url = f"{broker_process.url}/topics/{quote(answer_topic(answer_id))}/events"
    with trio.fail_after(30):
        async with BrokerClient(broker_process.url) as client:
            await generate(client, answer_id, delay=0)
        status, events = await read_stream(f"{url}?last=1000")
        assert status == 200
        kinds = [e.event for e in events]
        assert kinds == ["broker.start", *["token"] * len(TOKENS), "done", "broker.end"]
        assert "".join(e.data for e in events[1:-2]) == ANSWER.replace("\r\n", "\n")
        assert '"finish_reason":"stop"' in events[-2].data

        tenth = events[10]  # the 10th token
        _, resumed = await read_stream(f"{url}?last_event_id={quote(tenth.id)}")
        assert "".join(e.data for e in resumed if e.event == "token") == "".join(TOKENS[10:])
        assert [e.event for e in resumed][-2:] == ["done", "broker.end"]

        _, newest = await read_stream(f"{url}?last=3")
        assert [(e.event, e.data) for e in newest[1:3]] == [
            ("token", TOKENS[-2]),
            ("token", TOKENS[-1]),
        ]
        status, nothing = await read_stream(f"{url}?last_event_id={quote(events[-2].id)}")
        assert (status, nothing) == (204, [])


async def test_failure_is_a_namespaced_final_event(broker_process: Any) -> None:
    """A generation that fails after 7 tokens: the consumer (client library) gets 7 tokens,
    then ``generation.failed``, never an event named ``error``."""
    answer_id = new_id()
    with trio.fail_after(30):
        async with BrokerClient(broker_process.url) as client:
            answer = Answer()
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(consume, client, answer_id, answer=answer))
                final = await generate(client, answer_id, delay=0, fail_after=7)
            url = f"{broker_process.url}/topics/{quote(answer_topic(answer_id))}/events?last=1000"
            _, events = await read_stream(url)
    assert answer.tokens == TOKENS[:7]
    assert (answer.outcome, answer.final) == ("generation.failed", final)
    assert final["error"]["code"] == "model_overloaded"
    assert [e.event for e in events][-2:] == ["generation.failed", "broker.end"]
    assert "error" not in {e.event for e in events}


@pytest.mark.browser
async def test_page_renders_tokens_as_they_arrive(broker_process: Any, open_page: Any) -> None:
    """A page open before the answer renders it token by token (seen mid-way), then ``done``
    and the end of the stream; a page opened afterwards shows the whole answer; a failed
    answer shows what was generated and the failure."""
    answer_id, failed_id = new_id(), new_id()
    with trio.fail_after(60):
        async with BrokerClient(broker_process.url) as client:
            page = await open_page(page_url(broker_process.url, "token_stream", answer=answer_id))
            await page.wait_for("window.example.subscription.status === 'open'")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(generate, client, answer_id, delay=0.02))
                partial_text = await page.wait_for(
                    "window.example.tokens > 0 && !window.example.outcome"
                    " && document.getElementById('answer-state').dataset.state === 'streaming'"
                    " && document.getElementById('answer-text').textContent"
                )
                assert ANSWER.startswith(partial_text)
                assert partial_text != ANSWER
            await page.wait_for(_ended("done"))
            assert await page.evaluate("document.getElementById('answer-text').textContent") == (
                ANSWER
            )
            # No retry loop: every attempt opened (see _assert_ended_without_retry_loop).
            stats = await page.evaluate("window.example.subscription.stats")
            assert stats["attempts"] == stats["reconnects"] + 1

            later = await open_page(page_url(broker_process.url, "token_stream", answer=answer_id))
            await later.wait_for(_ended("done"))
            assert await later.evaluate("window.example.text") == ANSWER
            assert await later.evaluate("window.example.tokens") == len(TOKENS)

            await generate(client, failed_id, delay=0, fail_after=5)
            failed = await open_page(page_url(broker_process.url, "token_stream", answer=failed_id))
            await failed.wait_for(_ended("generation.failed"))
            assert await failed.evaluate("window.example.text") == "".join(TOKENS[:5])
            note = await failed.evaluate("document.getElementById('answer-note').textContent")
            assert "the model is overloaded" in note
            for p in (page, later, failed):
                assert await p.errors() == []


def _ended(outcome: str) -> str:
    return (
        f"window.example.outcome === {js(outcome)}"
        " && window.example.subscription.status === 'closed'"
        " && window.example.statuses.at(-1).reason === 'ended'"
    )
