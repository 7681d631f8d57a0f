"""``python -m examples.resilient_client [--url URL] [--topic T] [--interval S]``

Publishes a timestamped ``tick`` every second and prints the page with the connection-quality
panel. Stop and restart the broker (or pause it with ``kill -STOP``) to watch the page cope.
"""

from __future__ import annotations

from broker_client import BrokerClient

from .._shared import command_line, page_url, run, say
from .ticks import DEFAULT_TOPIC, publish_ticks


def main(argv: list[str] | None = None) -> None:
    parser = command_line("resilient_client", "Publish timestamped ticks for the page.")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="ticks topic (%(default)s)")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between ticks (%(default)s)"
    )
    parser.add_argument("--count", type=int, default=None, help="stop after N ticks")
    args = parser.parse_args(argv)

    async def publisher() -> None:
        async with BrokerClient(args.url, token=args.token) as client:
            query = {} if args.topic == DEFAULT_TOPIC else {"topic": args.topic}
            say(f"publishing ticks; watch at {page_url(args.url, 'resilient_client', **query)}")
            say("Ctrl-C stops")
            await publish_ticks(client, args.topic, interval=args.interval, count=args.count)

    run(publisher)


if __name__ == "__main__":
    main()
