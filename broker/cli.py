"""``broker run|cluster|token|top|pub|sub``: argument parsing and exit codes; no broker logic."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import signal
import sys
import time
from functools import partial
from typing import Final

import trio

from .config import Settings, load_settings
from .core.errors import ConfigError
from .edge.auth import DEFAULT_TOKEN_TTL_SECONDS, mint_token
from .server import RunningServer, serve
from .supervisor import cluster_secret, supervise

#: Allocations between young-generation garbage collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000
#: Young collections between middle-generation ones (CPython's default: 10). A middle
#: collection walks everything that survived the young ones since the last: with 10 and
#: 2000 streams arriving at once that was up to 100 000 objects, a 26-43 ms stall of the
#: loop; with 2, 5-8 ms (``python -m load.durable --stall``).
GC_MIDDLE_THRESHOLD = 2
#: Middle collections between full ones (CPython's default: 10), raised as the middle
#: threshold was lowered, so full collections come as often as before (every 100 young
#: ones at most; CPython also waits until the long-lived objects grew by a quarter).
GC_OLD_THRESHOLD = 50


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broker run", description="Run one broker.")
    parser.add_argument("--config", help="a config.toml (default: ./config.toml if present)")
    parser.add_argument("--host", help="listen address (overrides [server] host)")
    parser.add_argument("--port", type=int, help="listen port, 0 for any (overrides [server] port)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run N processes on the same port, joined as a cluster (one per core)",
    )
    return parser


def settings_from_args(argv: list[str], environ: dict[str, str]) -> Settings:
    """Parse ``broker run`` flags into settings (config file, environment, flags)."""
    args = _run_parser().parse_args(argv)
    path = args.config
    if path is None and os.path.exists("config.toml"):
        path = "config.toml"
    server: dict[str, object] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    return load_settings(path, environ=environ, overrides={"server": server} if server else None)


def freeze_startup_heap() -> None:
    """Leave what the start built (modules, classes, functions, the server's own objects:
    about 100 000 objects that live as long as the process) out of every later garbage
    collection: a full collection walked them all, about 30 ms each time."""
    gc.collect()
    gc.freeze()


async def _run(settings: Settings) -> None:
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(serve, settings)
        freeze_startup_heap()
        print(f"broker: listening on {server.url}", file=sys.stderr, flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                server.request_shutdown()
                break


def run_main(argv: list[str]) -> int:
    try:
        settings = settings_from_args(argv, dict(os.environ))
    except ConfigError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 2
    workers = _run_parser().parse_args(argv).workers
    if workers > 1:
        return supervise(
            workers,
            host=settings.server.host,
            port=settings.server.port,
            peer_port=settings.cluster.port,
            shared_port=True,
            config=_run_parser().parse_args(argv).config,
            engine=settings.cluster.engine,
            where=_store_name(settings),
        )
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Each new stream allocates ~100 tracked objects (task, frames, scopes), so the default
    # young-generation threshold (700) ran a collection every few connections: 30-40 % of
    # the CPU of accepting SSE streams (load/, 5000 connections). Collections still run;
    # a server holding thousands of long-lived connections just runs them less often.
    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, GC_OLD_THRESHOLD)
    try:
        trio.run(partial(_run, settings))
    except (OSError, ConfigError, BaseExceptionGroup) as exc:  # e.g. the port is taken
        if isinstance(exc, BaseExceptionGroup):
            config, _ = exc.split(ConfigError)
            if config is not None:  # the engine refused its settings (Redis unreachable)
                print(f"broker: {_first_leaf(config)}", file=sys.stderr)
                return 2
            matched, _ = exc.split(OSError)
            if matched is None:
                raise
            leaf: BaseException = _first_leaf(matched)
        else:
            leaf = exc
        if isinstance(leaf, ConfigError):
            print(f"broker: {leaf}", file=sys.stderr)
            return 2
        print(f"broker: cannot serve: {leaf}", file=sys.stderr)
        return 1
    return 0


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def cluster_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="broker cluster", description="Run a local cluster of N nodes on consecutive ports."
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="first node's public port")
    parser.add_argument("--peer-port", type=int, default=9080, help="first node's peer port")
    parser.add_argument(
        "--config", help="a config.toml for every node (default: ./config.toml if present)"
    )
    parser.add_argument(
        "--engine",
        choices=("mesh", "redis"),
        help="the cluster engine (overrides [cluster] engine and BROKER_CLUSTER_ENGINE)",
    )
    parser.add_argument(
        "--redis-url",
        help="where Redis is, for the redis engine (overrides [cluster] redis_url)",
    )
    args = parser.parse_args(argv)
    if args.nodes < 1:
        print("broker: --nodes must be at least 1", file=sys.stderr)
        return 2
    path = args.config
    if path is None and os.path.exists("config.toml"):
        path = "config.toml"  # what each node's `broker run` reads too
    # What the supervisor gives each node: the cluster on, and (mesh) a shared secret.
    flags: dict[str, object] = {"enabled": True, "secret": cluster_secret()}
    if args.engine is not None:
        flags["engine"] = args.engine
    if args.redis_url is not None:
        flags["redis_url"] = args.redis_url
    try:  # the nodes' own settings, checked once here: a bad one stops before any start
        settings = load_settings(path, environ=dict(os.environ), overrides={"cluster": flags})
    except ConfigError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 2
    return supervise(
        args.nodes,
        host=args.host,
        port=args.port,
        peer_port=args.peer_port,
        shared_port=False,
        config=args.config,
        engine=settings.cluster.engine,
        redis_url=args.redis_url,
        where=_store_name(settings),
    )


_TTL: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_TTL_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl(text: str) -> float:
    match = _TTL.fullmatch(text.strip().lower())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use 3600, 90s, 30m, 12h or 7d"
        )
    return float(match[1]) * _TTL_UNITS[match[2]]


def _token_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker token",
        description="Mint a JWT the broker accepts, signed with the [auth] key of the config "
        "(or BROKER_AUTH_SECRET), and print it.",
        epilog="Patterns: jobs/42 (one topic), jobs/* (one segment), jobs/** (everything "
        "below), ** (all). Example: broker token --sub worker-1 --publish 'jobs/**'",
    )
    parser.add_argument("--config", help="a config.toml (default: ./config.toml if present)")
    parser.add_argument("--sub", default="", help="the token's subject (who it is for)")
    parser.add_argument(
        "--publish",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATTERN",
        help="topic patterns this token may publish to",
    )
    parser.add_argument(
        "--subscribe",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATTERN",
        help="topic patterns this token may subscribe to",
    )
    parser.add_argument("--admin", action="store_true", help='add "admin": true')
    parser.add_argument(
        "--ttl",
        type=_ttl,
        default=float(DEFAULT_TOKEN_TTL_SECONDS),
        help="how long it is valid: seconds, or 30m, 12h, 7d (default: 1h)",
    )
    parser.add_argument(
        "--key",
        help="the PEM private key, for RS256/ES256 (the broker holds only the public key)",
    )
    return parser


def token_main(argv: list[str], environ: dict[str, str] | None = None) -> int:
    """``broker token``: print a signed token (exit 2 when there is no key to sign with)."""
    args = _token_parser().parse_args(argv)
    path = args.config
    if path is None and os.path.exists("config.toml"):
        path = "config.toml"
    try:
        auth = load_settings(path, environ=dict(os.environ) if environ is None else environ).auth
    except ConfigError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 2
    if auth.algorithm == "HS256":
        key = auth.secret
        if not key:
            print(
                "broker: auth is off: no [auth] secret to sign with. Set one in config.toml or "
                "in the environment of both the broker and this command, e.g.\n"
                "  export BROKER_AUTH_SECRET=$(python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')",
                file=sys.stderr,
            )
            return 2
    elif not args.key:
        print(
            f"broker: [auth] algorithm is {auth.algorithm}: give the private key that "
            "matches public_key_file with --key FILE",
            file=sys.stderr,
        )
        return 2
    else:
        try:
            with open(args.key) as file:
                key = file.read()
        except OSError as exc:
            print(f"broker: cannot read --key: {exc}", file=sys.stderr)
            return 2
    if not args.publish and not args.subscribe and not args.admin:
        print(
            "broker: note: this token allows nothing; add --publish/--subscribe PATTERN",
            file=sys.stderr,
        )
    try:
        token = mint_token(
            algorithm=auth.algorithm,
            key=key,
            now=time.time(),  # a JWT's iat/exp are wall-clock time
            ttl_seconds=args.ttl,
            subject=args.sub,
            publish=args.publish,
            subscribe=args.subscribe,
            admin=args.admin,
            audience=auth.audience,
            issuer=auth.issuer,
        )
    except ValueError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _store_name(settings: Settings) -> str:
    """The Redis URL with its password hidden, for the supervisor's start line."""
    if settings.cluster.engine != "redis":
        return ""
    from .engines.redis.address import parse_redis_url  # sans-IO; checked by load_settings

    return parse_redis_url(settings.cluster.redis_url).redacted()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``broker`` command."""
    argv = sys.argv[1:] if argv is None else argv
    commands = "run, cluster, token, top, pub, sub"
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: broker {{{commands}}} ...  (broker COMMAND --help for details)")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return run_main(rest)
    if command == "cluster":
        return cluster_main(rest)
    if command == "token":
        return token_main(rest)
    if command == "top":
        from .top import top_main  # a client of the admin API: no server imports

        return top_main(rest)
    if command in ("pub", "sub"):
        try:
            from broker_client import _cli  # the client library ships the CLI
        except ImportError:
            print(
                "broker: the client library is not installed (pip install -e clients/python)",
                file=sys.stderr,
            )
            return 2
        code: int = _cli.pub_main(rest) if command == "pub" else _cli.sub_main(rest)
        return code
    print(f"broker: unknown command {command!r}; use one of {commands}", file=sys.stderr)
    return 2
