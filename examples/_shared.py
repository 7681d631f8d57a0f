"""What the four examples share: the command line, page links, ids and timestamps.

Python code talks to the broker only through the client library, ``broker_client``
(``BrokerClient``: publish with ``retain``/``final``, subscribe, iterate events and notices).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlencode

import trio
from broker_client import BrokerError

DEFAULT_URL: Final = "http://127.0.0.1:8080"


def page_url(url: str, example: str, **query: str) -> str:
    """An example's page on the broker at ``url``, e.g. ``/examples/job_progress/?job=…``."""
    suffix = f"?{urlencode(query)}" if query else ""
    return f"{url.rstrip('/')}/examples/{example}/{suffix}"


def command_line(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the examples' common ``--url`` option."""
    parser = argparse.ArgumentParser(prog=f"python -m examples.{prog}", description=description)
    parser.add_argument(
        "--url",
        default=os.environ.get("BROKER_URL", DEFAULT_URL),
        help="the broker's base URL (default: $BROKER_URL or %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("BROKER_TOKEN") or None,
        help="a JWT when the broker has auth on (default: $BROKER_TOKEN; see `broker token`)",
    )
    return parser


def new_id() -> str:
    """A short random id for a job, an answer or an alert."""
    return secrets.token_hex(4)


def utc_now() -> str:
    """The current time as RFC 3339 UTC with milliseconds (data, not a timer)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def say(message: str) -> None:
    """A progress line for the person running the example (stderr; stdout stays data)."""
    print(message, file=sys.stderr, flush=True)


def run(main: Callable[[], Awaitable[object]]) -> None:
    """``trio.run(main)`` for a command: Ctrl-C ends quietly with status 130, a broker that
    refuses or cannot be reached with one line and status 1."""
    try:
        trio.run(main)
    except BaseException as exc:
        leaves = list(_leaves(exc))
        if all(isinstance(e, KeyboardInterrupt) for e in leaves):
            raise SystemExit(130) from None
        if all(isinstance(e, BrokerError) for e in leaves):
            for error in leaves:
                say(f"error: {error or type(error).__name__}")
            raise SystemExit(1) from None
        raise


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
