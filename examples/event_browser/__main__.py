"""``python -m examples.event_browser [--url URL] [--topic T] [--interval S] [--count N]``

Runs the summary service and a generator of fake alerts, and prints the page to browse them
on. Acknowledge alerts on the page; the bell's count follows.
"""

from __future__ import annotations

import random

import trio
from broker_client import BrokerClient

from .._shared import command_line, page_url, run, say
from .alerts import DEFAULT_TOPIC, generate_alerts
from .summary import serve_summary


def main(argv: list[str] | None = None) -> None:
    parser = command_line("event_browser", "Fake alerts, and the service that counts them.")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="alerts topic (%(default)s)")
    parser.add_argument(
        "--interval", type=float, default=4.0, help="seconds between alerts (%(default)s)"
    )
    parser.add_argument("--count", type=int, default=None, help="stop generating after N")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    args = parser.parse_args(argv)

    async def service() -> None:
        async with (
            BrokerClient(args.url, token=args.token) as client,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(serve_summary, client, args.topic)
            query = {} if args.topic == DEFAULT_TOPIC else {"topic": args.topic}
            page = page_url(args.url, "event_browser", **query)
            say(f"summary service running; browse at {page}")
            say("Ctrl-C stops")

            def report(alert: dict[str, object]) -> None:
                title = alert["title"]
                assert isinstance(title, dict)
                say(f"  {alert['severity']:<8} {alert['id']}  {title['ko']} ({title['en']})")

            await generate_alerts(
                client,
                args.topic,
                rng=random.Random(args.seed),
                interval=args.interval,
                count=args.count,
                on_alert=report,
            )
            # Generated what was asked: the service keeps counting acks until Ctrl-C.

    run(service)


if __name__ == "__main__":
    main()
