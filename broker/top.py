"""``broker top``: the admin page's view in a terminal, through the admin API.

A refreshing table of the slowest connections and the hottest topics, for a shell on the
broker's host (over SSH: no browser, no port forwarding; plain ANSI, standard library only).
``--once`` prints one frame without escape codes, for scripts; ``--disconnect ID`` disconnects
one client and exits. Interactive keys: ``q`` quits, ``s`` cycles the sort, ``d`` asks for a
connection id (Enter alone picks the top row) and disconnects it.

Rendering (:func:`render`) is a pure function of the API's answers, so it is tested without
a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

SORTS: Final = ("lag", "queue", "dropped", "age")
CONNECTION_COLUMNS: Final = (
    "ID", "TRANSPORT", "REMOTE", "SUBJECT", "LAG", "QUEUE", "QBYTES", "DROPPED", "DELIVERED",
    "OUT", "AGE", "TOPICS",
)  # fmt: skip
DEFAULT_URL: Final = "http://127.0.0.1:8080"
TIMEOUT_SECONDS: Final = 5.0

_RED, _YELLOW, _BOLD, _DIM, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[2m", "\x1b[0m"


class TopError(Exception):
    """The broker could not be asked (unreachable, refused, bad answer)."""


class AdminClient:
    """The admin API over HTTP (stdlib ``urllib``)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        request = urllib.request.Request(
            f"{self.url}{path}{'?' + query if query else ''}", method=method
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read()).get("error", "")
            except (ValueError, AttributeError):
                detail = ""
            hint = ""
            if error.code in (401, 403):
                hint = " (pass an admin token: --token or BROKER_ADMIN_TOKEN)"
            raise TopError(f"{method} {path}: {error.code} {detail}{hint}") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise TopError(f"cannot reach {self.url}: {reason}") from None

    def snapshot(self, sort: str, limit: int) -> dict[str, Any]:
        return {
            "summary": self.call("GET", "/admin/api/summary"),
            "connections": self.call("GET", "/admin/api/connections", sort=sort, limit=limit),
            "topics": self.call("GET", "/admin/api/topics", sort="rate", limit=limit),
            "cluster": self.call("GET", "/admin/api/cluster"),
        }

    def disconnect(self, connection_id: int, reason: str | None) -> Any:
        return self.call("DELETE", f"/admin/api/connections/{connection_id}", reason=reason)


# -- rendering (pure) ----------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f}k"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.1f}"


def _bytes(value: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def render(snapshot: dict[str, Any], *, url: str, width: int, color: bool, sort: str) -> str:
    """One frame of ``broker top`` from the admin API's answers."""
    summary, cluster = snapshot["summary"], snapshot["cluster"]
    connections, topics = snapshot["connections"], snapshot["topics"]
    latest = summary.get("latest") or {}
    bold = (lambda s: f"{_BOLD}{s}{_RESET}") if color else (lambda s: s)
    lines = [
        bold(f"broker top  {url}  node {cluster['node']}  engine {cluster['engine']}")
        + f"  {time.strftime('%H:%M:%S')}",
        (
            f"publishes/s {_num(latest.get('publishes'))}   "
            f"deliveries/s {_num(latest.get('deliveries'))}   "
            f"connections {_num(summary['subscribers'])}   "
            f"drops/s {_num(latest.get('drops'))}   "
            f"oldest lag {_duration(latest.get('max_lag'))}   "
            f"dropped {_num(summary['dropped'])}   evicted {_num(summary['evicted'])}"
        ),
        "",
        bold(f"CONNECTIONS by {sort} ({connections['total']} open)"),
    ]
    rows = []
    levels = []
    for c in connections["connections"]:
        topic_list = ",".join(c["topics"])
        if c["topic_count"] > len(c["topics"]):
            topic_list += f",+{c['topic_count'] - len(c['topics'])}"
        rows.append(
            [
                str(c["id"]),
                c["transport"],
                c["remote"],
                c["subject"] or "-",
                _duration(c["lag_seconds"]),
                _num(c["queue_events"]),
                _bytes(c["queue_bytes"]),
                _num(c["dropped"]),
                _num(c["delivered"]),
                "-" if c["bytes_per_second"] is None else _bytes(c["bytes_per_second"]) + "/s",
                _duration(c["age_seconds"]),
                topic_list,
            ]
        )
        levels.append(2 if c["lag_seconds"] >= 5 else 1 if c["lag_seconds"] >= 1 else 0)
    table = _table(
        list(CONNECTION_COLUMNS),
        rows,
        right={4, 5, 6, 7, 8, 9, 10},
    )
    lines.append(table[0])
    for text, level in zip(table[1:], levels, strict=True):
        text = text[:width]
        if color and level:
            text = f"{_RED if level == 2 else _YELLOW}{text}{_RESET}"
        lines.append(text)
    if not rows:
        lines.append("(no subscribers)")
    lines += ["", bold(f"HOT TOPICS ({topics['total']} in memory)")]
    topic_rows = [
        [
            t["name"] + (" (closed)" if t["closed"] else ""),
            f"{t['rate']:.2f}",
            _num(t["subscribers"]),
            _num(t["published"]),
            _num(t["history_events"]),
            ",".join(t["retained_types"]) or "-",
        ]
        for t in topics["topics"]
    ]
    table = _table(
        ["TOPIC", "RATE/s", "SUBS", "PUBLISHED", "HISTORY", "RETAINED"],
        topic_rows,
        right={1, 2, 3, 4},
    )
    lines += [t[:width] for t in table] if topic_rows else [table[0], "(no topics)"]
    if cluster["nodes"]:
        lines += ["", bold("PEERS")]
        for peer in cluster["nodes"]:
            lines.append(
                f"{peer['node']}  {peer.get('addr') or '-'}  {peer['state']}"
                f"  lag {_num(peer.get('lag_events'))} events"
            )
    if cluster.get("store"):
        store = cluster["store"]
        lines += [
            "",
            f"store {store['engine']} {store.get('redis', '')} {store['state']}"
            f"  last commit {_duration(store.get('last_commit_seconds'))}"
            f"  failures {store['failures']}",
        ]
    return "\n".join(
        line if len(line) <= width or "\x1b" in line else line[:width] for line in lines
    )


# -- the command ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker top",
        description="The slowest connections and hottest topics of a running broker.",
    )
    parser.add_argument(
        "--url", default=os.environ.get("BROKER_URL", DEFAULT_URL), help="the broker's URL"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("BROKER_ADMIN_TOKEN"),
        help="a JWT with admin: true (default: $BROKER_ADMIN_TOKEN; none needed on loopback "
        "while auth is off)",
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    parser.add_argument("--sort", choices=SORTS, default="lag", help="order of connections")
    parser.add_argument("--limit", type=int, default=15, help="rows per table (1-1000)")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--json", action="store_true", help="with --once: the raw answers")
    parser.add_argument("--disconnect", type=int, metavar="ID", help="disconnect one client")
    parser.add_argument("--reason", help="the reason the disconnected client is told")
    return parser


def top_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.limit <= 1000 or args.interval <= 0:
        print("broker top: --limit is 1-1000 and --interval above 0", file=sys.stderr)
        return 2
    client = AdminClient(args.url, args.token)
    try:
        if args.disconnect is not None:
            answer = client.disconnect(args.disconnect, args.reason)
            print(f"disconnected {answer['id']} (told to retry after {answer['retry_ms']} ms)")
            return 0
        if args.once or not sys.stdout.isatty():
            snapshot = client.snapshot(args.sort, args.limit)
            if args.json:
                print(json.dumps(snapshot, indent=2))
            else:
                width = shutil.get_terminal_size((160, 40)).columns
                print(render(snapshot, url=args.url, width=width, color=False, sort=args.sort))
            return 0
        return _interactive(client, args)
    except TopError as error:
        print(f"broker top: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _interactive(client: AdminClient, args: argparse.Namespace) -> int:
    import termios
    import tty

    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if sys.stdin.isatty() else None
    sort, message = args.sort, ""
    snapshot: dict[str, Any] | None = None
    try:
        if saved is not None:
            tty.setcbreak(stdin)
        sys.stdout.write("\x1b[?25l")  # hide the cursor
        while True:
            try:
                snapshot = client.snapshot(sort, args.limit)
                message = message if message.startswith("disconnected") else ""
            except TopError as error:
                message = f"(stale) {error}"
            size = shutil.get_terminal_size((120, 40))
            frame = (
                render(snapshot, url=args.url, width=size.columns, color=True, sort=sort)
                if snapshot is not None
                else ""
            )
            footer = f"{_DIM}q quit  s sort ({sort})  d disconnect{_RESET}  {message}"
            sys.stdout.write("\x1b[H\x1b[2J" + frame + "\n\n" + footer + "\n")
            sys.stdout.flush()
            ready, _, _ = select.select([stdin], [], [], args.interval)
            if not ready:
                continue
            key = os.read(stdin, 1).decode(errors="replace")
            if key in ("q", "\x03", "\x04"):
                return 0
            if key == "s":
                sort = SORTS[(SORTS.index(sort) + 1) % len(SORTS)]
            elif key == "d" and snapshot is not None:
                message = _ask_disconnect(client, snapshot, stdin, saved)
    finally:
        sys.stdout.write("\x1b[?25h")
        sys.stdout.flush()
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)


def _ask_disconnect(client: AdminClient, snapshot: dict[str, Any], stdin: int, saved: Any) -> str:
    import termios
    import tty

    rows = snapshot["connections"]["connections"]
    default = rows[0]["id"] if rows else None
    if saved is not None:
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)  # a line, echoed
    sys.stdout.write("\x1b[?25h")
    try:
        answer = input(f"disconnect connection id [{default}]: ").strip()
    except EOFError:
        answer = ""
    finally:
        if saved is not None:
            tty.setcbreak(stdin)
        sys.stdout.write("\x1b[?25l")
    target = answer or (str(default) if default is not None else "")
    if not target.isdigit():
        return "no connection chosen"
    try:
        client.disconnect(int(target), "disconnected with broker top")
    except TopError as error:
        return str(error)
    return f"disconnected {target}"
