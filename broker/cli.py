"""``broker run|pub|sub``: argument parsing and exit codes; no broker logic here."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from functools import partial

import trio

from .config import Settings, load_settings
from .core.errors import ConfigError
from .server import RunningServer, serve
from .supervisor import cluster_secret, supervise

#: Allocations between young-generation garbage collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


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


async def _run(settings: Settings) -> None:
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(serve, settings)
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
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
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


def _store_name(settings: Settings) -> str:
    """The Redis URL with its password hidden, for the supervisor's start line."""
    if settings.cluster.engine != "redis":
        return ""
    from .engines.redis.address import parse_redis_url  # sans-IO; checked by load_settings

    return parse_redis_url(settings.cluster.redis_url).redacted()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``broker`` command."""
    argv = sys.argv[1:] if argv is None else argv
    commands = "run, cluster, pub, sub"
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: broker {{{commands}}} ...  (broker COMMAND --help for details)")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return run_main(rest)
    if command == "cluster":
        return cluster_main(rest)
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
