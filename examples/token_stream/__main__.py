"""``python -m examples.token_stream [--url URL] [--delay S] [--fail-after N] [--wait S]``

Streams a fake answer token by token and prints it as a Python consumer receives it (stdout);
stderr shows the page and a curl command that follow the same answer. ``--follow ID`` only
prints an answer streamed before (or still streaming), from its first token.
"""

from __future__ import annotations

import sys
from functools import partial
from urllib.parse import quote

import trio
from broker_client import BrokerClient

from .._shared import command_line, new_id, page_url, run, say
from .consumer import Answer, consume
from .generator import DONE_EVENT, answer_topic, generate


def main(argv: list[str] | None = None) -> None:
    parser = command_line("token_stream", "Stream a fake LLM answer, token by token.")
    parser.add_argument("--answer", default=None, help="the answer id (default: a random one)")
    parser.add_argument(
        "--delay", type=float, default=0.08, help="seconds between tokens (%(default)s)"
    )
    parser.add_argument("--fail-after", type=int, default=None, help="fail after N tokens")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait before generating")
    parser.add_argument(
        "--follow", metavar="ID", default=None, help="only print an answer that exists already"
    )
    args = parser.parse_args(argv)
    answer_id = args.follow or args.answer or new_id()

    async def stream() -> None:
        async with (
            BrokerClient(args.url, token=args.token) as client,
            trio.open_nursery() as nursery,
        ):
            url = f"{args.url.rstrip('/')}/topics/{quote(answer_topic(answer_id))}/events"
            page = page_url(args.url, "token_stream", answer=answer_id)
            say(f"answer {answer_id}: watch it at {page}")
            say(f"  or: curl -N '{url}?last=1000'")
            answer = Answer()
            await nursery.start(partial(consume, client, answer_id, out=sys.stdout, answer=answer))
            if args.follow is None:
                await trio.sleep(args.wait)
                await generate(client, answer_id, delay=args.delay, fail_after=args.fail_after)
        print(flush=True)
        if answer.outcome is None:
            say(f"answer {answer_id} ended without done")
            raise SystemExit(1)
        if answer.outcome != DONE_EVENT:
            say(f"generation failed: {answer.final['error']['message']}")
            raise SystemExit(1)
        say(f"done: {answer.final['tokens']} tokens")

    run(stream)


if __name__ == "__main__":
    main()
