"""``broker pub`` and ``broker sub``: argument parsing, output format and exit codes.

``pub_main`` and ``sub_main`` take the arguments after the sub-command and return the exit
status, so the server's ``broker`` command (and ``python -m broker_client``) can wire them in.

Exit codes: 0 success (for ``sub``: interrupted with Ctrl-C, stdout closed, or ``--count``
reached); 1 the broker could not be reached, failed (5xx) or timed out; 2 bad usage, bad input,
or the broker rejected the request (4xx).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, TextIO

import trio

from ._client import DEFAULT_URL, TIMEOUT_SECONDS, BrokerClient, publish
from ._errors import BrokerError, ClientError
from ._events import Event
from ._subscription import Subscription

__all__ = ["main", "pub_main", "script", "sub_main"]

URL_ENV: Final = "BROKER_URL"
TOKEN_ENV: Final = "BROKER_TOKEN"


def _token_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"a JWT for a broker with auth on (default: ${TOKEN_ENV}); `broker token` mints one",
    )


EXIT_OK: Final = 0
EXIT_BROKER: Final = 1
EXIT_USAGE: Final = 2


def _default_urls() -> list[str]:
    value = os.environ.get(URL_ENV, "").strip()
    return [u for u in value.replace(",", " ").split() if u] or [DEFAULT_URL]


def _fail(prog: str, error: BaseException, stderr: TextIO) -> int:
    print(f"{prog}: error: {error}", file=stderr)
    if isinstance(error, ClientError | ValueError | TypeError):
        return EXIT_USAGE
    return EXIT_BROKER


def pub_main(argv: list[str]) -> int:
    """``broker pub TOPIC [DATA | -] [--event TYPE] [--url URL] [--json | --text] [--retain]``.

    Also ``--final`` (close the topic after this event) and ``--timeout SECONDS``.

    DATA omitted or ``-`` reads standard input (one trailing newline is removed). Without
    ``--json``/``--text`` the data is sent as JSON when it parses as JSON (``42``, ``{"a":1}``,
    ``"quoted"``) and as text otherwise. Prints the event id.

    Args:
        argv: the arguments after ``pub``.

    Returns:
        The exit status (see the module docstring).
    """
    parser = argparse.ArgumentParser(prog="broker pub", description="Publish one event.")
    parser.add_argument("topic", help="topic name, e.g. jobs or jobs/42")
    parser.add_argument("data", nargs="?", default="-", help="event data; '-' or absent: stdin")
    parser.add_argument("--event", help="event type (default: untyped)")
    parser.add_argument(
        "--url",
        action="append",
        help=f"broker URL; repeat for failover (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="seconds")
    _token_option(parser)
    parser.add_argument("--retain", action="store_true", help="keep as the topic's state")
    parser.add_argument("--final", action="store_true", help="close the topic after it")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--json", action="store_true", help="the data is JSON (checked here)")
    kind.add_argument("--text", action="store_true", help="the data is text")
    args = parser.parse_args(argv)
    text: str = args.data
    if text == "-":
        text = sys.stdin.read()
        if text.endswith("\n"):
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
    value: Any = text
    if args.json:
        try:
            value = json.loads(text)
        except ValueError as exc:
            error = ValueError(f"--json: the data is not JSON ({exc})")
            return _fail("broker pub", error, sys.stderr)
    elif not args.text:
        try:
            value = json.loads(text)
        except ValueError:
            value = text
    try:
        event_id = publish(
            args.url or _default_urls(),
            args.topic,
            value,
            event=args.event,
            retain=args.retain,
            final=args.final,
            timeout=args.timeout,
            token=args.token,
        )
    except (BrokerError, ValueError, TypeError) as exc:
        return _fail("broker pub", exc, sys.stderr)
    print(event_id)
    return EXIT_OK


def format_event(event: Event, *, as_json: bool) -> str:
    """One output line for ``broker sub``.

    ``--json``: ``{"id", "topic", "event", "data"}`` compact. Otherwise ``TOPIC EVENT DATA`` with
    ``message`` for untyped events, text data as is (JSON-quoted if it holds a line break) and
    JSON data compact.
    """
    if as_json:
        record = {"id": event.id, "topic": event.topic, "event": event.event, "data": event.data}
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    data = event.data
    if isinstance(data, str) and "\n" not in data and "\r" not in data:
        shown = data
    else:
        shown = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"{event.topic} {event.event or 'message'} {shown}"


def sub_main(argv: list[str]) -> int:
    """``broker sub TOPIC... [--from-id ID] [--json] [--url URL ...] [--transport auto|sse|ws]``.

    Also ``--last N`` / ``--since SECONDS`` (replay recent history first), ``-n/--count N``
    (exit after N events) and ``--timeout SECONDS`` (to connect). Exits 0 when every topic has
    ended (closed by a final event).

    Prints one event per line on stdout (flushed at once) and notices (reconnects, failovers,
    resets, drops) on stderr; follows reconnects until interrupted.

    Args:
        argv: the arguments after ``sub``.

    Returns:
        The exit status (see the module docstring).
    """
    parser = argparse.ArgumentParser(prog="broker sub", description="Follow topics.")
    parser.add_argument("topics", nargs="+", metavar="TOPIC", help="topics to follow")
    parser.add_argument("--from-id", help="resume after this event id")
    parser.add_argument("--last", type=int, help="first replay the newest N events")
    parser.add_argument(
        "--since", type=float, metavar="SECONDS", help="first replay the last SECONDS of events"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--url",
        action="append",
        help=f"broker URL; repeat for failover (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    parser.add_argument("--transport", choices=("auto", "sse", "ws"), default="auto")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="seconds to connect")
    parser.add_argument("-n", "--count", type=int, help="exit after this many events")
    _token_option(parser)
    args = parser.parse_args(argv)
    try:
        return trio.run(_subscribe, args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return EXIT_OK
    except (BrokerError, ValueError) as exc:
        return _fail("broker sub", exc, sys.stderr)


async def _subscribe(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    urls = args.url or _default_urls()
    async with BrokerClient(urls, timeout=args.timeout, token=args.token) as client:
        subscription = client.subscribe(
            args.topics,
            transport=args.transport,
            last_event_id=args.from_id,
            last=args.last,
            since=args.since,
        )
        return await _print_events(subscription, args, stdout, stderr)


async def _print_events(
    subscription: Subscription, args: argparse.Namespace, stdout: TextIO, stderr: TextIO
) -> int:
    seen = 0
    async with subscription as events:
        print(f"broker sub: streaming from {events.url} over {events.transport}", file=stderr)
        async for item in events:
            if not isinstance(item, Event):
                print(f"broker sub: {item}", file=stderr, flush=True)
                continue
            try:
                print(format_event(item, as_json=args.json), file=stdout, flush=True)
            except BrokenPipeError:
                # The reader went away (`| head`); point stdout at devnull so exit is quiet.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stdout.fileno())
                return EXIT_OK
            seen += 1
            if args.count is not None and seen >= args.count:
                return EXIT_OK
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    """``python -m broker_client pub|sub ...``."""
    commands = {"pub": pub_main, "sub": sub_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m broker_client {pub,sub} ...", file=sys.stderr)
        return EXIT_USAGE
    return commands[argv[0]](list(argv[1:]))


def script() -> None:
    """Console-script entry point (``broker-client pub|sub ...``)."""
    sys.exit(main(sys.argv[1:]))
