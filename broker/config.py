"""Settings: ``config.toml``, then ``BROKER_*`` environment, then CLI flags (sans-IO).

Parsed once at the edge into frozen dataclasses, one per TOML table. Every value is
validated and a bad one raises :class:`ConfigError` naming the key, which ``broker run``
turns into one line on stderr and exit code 2. The environment is a parameter so tests
pass a dict. Environment names are ``BROKER_<TABLE>_<KEY>``, e.g. ``BROKER_SERVER_PORT``.
"""

from __future__ import annotations

import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .core.errors import ConfigError


def _range(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    return {"low": low, "high": high}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``[server]``: where the public port listens."""

    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_range(0, 65535))
    reuse_port: bool = False


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """``[stream]``: subscriber streams and their queues."""

    heartbeat_seconds: float = field(default=15.0, metadata=_range(0.05, 3600))
    retry_ms: int = field(default=3000, metadata=_range(0, 3_600_000))
    queue_events: int = field(default=1024, metadata=_range(1, 10_000_000))
    queue_bytes: int = field(default=4 * 1024 * 1024, metadata=_range(1024, 1 << 40))
    send_timeout_seconds: float = field(default=30.0, metadata=_range(0.05, 3600))


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """``[history]``: what is kept for resume."""

    size: int = field(default=1000, metadata=_range(0, 10_000_000))


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """``[storage]``: where events are kept (docs/durability.md).

    ``kind = "durable"`` (default): an embedded store under ``path``; every acknowledged
    event, retained state, closed topic and the node's identity survive a restart.
    ``kind = "memory"``: nothing survives a restart. (The Redis engine keeps events in
    Redis and ignores this table.)
    """

    kind: str = field(default="durable", metadata={"choices": ("durable", "memory")})
    path: str = "./data"
    durability: str = field(default="process", metadata={"choices": ("process", "fsync")})
    max_age_seconds: float = field(default=0.0, metadata=_range(0, 1e10))
    max_bytes: int = field(default=1 << 30, metadata=_range(0, 1 << 50))
    closed_ttl_seconds: float = field(default=7 * 86400.0, metadata=_range(0, 1e10))
    topic_idle_seconds: float = field(default=300.0, metadata=_range(0, 1e7))
    sweep_seconds: float = field(default=5.0, metadata=_range(0.05, 86400))
    boot_id_file: str = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """``[limits]``: request limits."""

    max_body_bytes: int = field(default=1024 * 1024, metadata=_range(1, 1 << 32))
    max_head_bytes: int = field(default=16 * 1024, metadata=_range(1024, 1 << 24))
    idle_timeout_seconds: float = field(default=60.0, metadata=_range(0.05, 86400))
    head_timeout_seconds: float = field(default=10.0, metadata=_range(0.05, 3600))
    min_body_rate_bytes: int = field(default=1024, metadata=_range(0, 1 << 30))
    max_topics_per_subscription: int = field(default=64, metadata=_range(1, 100_000))
    max_connections: int = field(default=50_000, metadata=_range(0, 10_000_000))
    max_connections_per_ip: int = field(default=0, metadata=_range(0, 10_000_000))
    publish_rate: float = field(default=0.0, metadata=_range(0, 10_000_000))
    publish_burst: int = field(default=100, metadata=_range(1, 10_000_000))


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """``[auth]``: JWT bearer tokens (off while no key is set)."""

    algorithm: str = field(default="HS256", metadata={"choices": ("HS256", "RS256", "ES256")})
    secret: str = ""
    public_key_file: str = ""
    anonymous_subscribe: tuple[str, ...] = ("**",)
    cookie: str = "broker_token"
    query_token: bool = False
    audience: str = ""
    issuer: str = ""
    leeway_seconds: float = field(default=30.0, metadata=_range(0, 3600))
    #: Refuse tokens without ``exp`` (a token that never expires is a standing credential).
    require_exp: bool = True


@dataclass(frozen=True, slots=True)
class CorsSettings:
    """``[cors]``: pages on other origins."""

    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = False


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """``[tls]``: HTTPS and HTTP/2 on the public port (served by hypercorn)."""

    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """``[websocket]``: the WebSocket fallback."""

    ping_interval_seconds: float = field(default=15.0, metadata=_range(0.05, 3600))
    ping_timeout_seconds: float = field(default=10.0, metadata=_range(0.05, 3600))
    max_message_bytes: int = field(default=64 * 1024, metadata=_range(128, 1 << 30))
    allow_publish: bool = False


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """``[cluster]``: brokers that share their events (off by default).

    ``engine = "mesh"`` (default): peers replicate to each other over the peer link.
    ``engine = "redis"``: every node keeps its topics in Redis (``redis_*`` keys).
    """

    enabled: bool = False
    engine: str = field(default="mesh", metadata={"choices": ("mesh", "redis")})
    node_id: str = ""
    host: str = "127.0.0.1"
    port: int = field(default=9080, metadata=_range(0, 65535))
    advertise: str = ""
    seeds: tuple[str, ...] = ()
    secret: str = ""
    heartbeat_seconds: float = field(default=1.0, metadata=_range(0.01, 600))
    down_after_seconds: float = field(default=5.0, metadata=_range(0.05, 3600))
    holdback_seconds: float = field(default=2.0, metadata=_range(0.01, 3600))
    catchup_seconds: float = field(default=2.0, metadata=_range(0, 600))
    log_size: int = field(default=100_000, metadata=_range(100, 100_000_000))
    queue_frames: int = field(default=10_000, metadata=_range(10, 10_000_000))
    max_frame_bytes: int = field(default=4 * 1024 * 1024, metadata=_range(1024, 1 << 30))
    backoff_max_seconds: float = field(default=10.0, metadata=_range(0.01, 3600))
    #: A member unseen (no link, no frame) this long is removed and tombstoned.
    remove_after_seconds: float = field(default=300.0, metadata=_range(0.1, 30 * 86400))
    #: An origin no member has used this long leaves the vector: ids stop naming it.
    retire_after_seconds: float = field(default=600.0, metadata=_range(0.1, 30 * 86400))
    #: When a publish is answered 202: "local" (stored here) or "replicated" (stored by
    #: min_replicas peers too); a request overrides it with ?ack= or X-Broker-Ack.
    ack: str = field(default="local", metadata={"choices": ("local", "replicated")})
    min_replicas: int = field(default=1, metadata=_range(1, 1000))
    ack_timeout_seconds: float = field(default=5.0, metadata=_range(0.01, 600))
    handshake_timeout_seconds: float = field(default=5.0, metadata=_range(0.05, 600))
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "broker"
    redis_timeout_seconds: float = field(default=2.0, metadata=_range(0.05, 600))
    redis_idle_topic_seconds: float = field(default=30.0, metadata=_range(0.05, 86400))
    redis_tls_ca_file: str = ""
    redis_tls_cert_file: str = ""
    redis_tls_key_file: str = ""


@dataclass(frozen=True, slots=True)
class ShutdownSettings:
    """``[shutdown]``: how long streams get to flush their final notice."""

    grace_seconds: float = field(default=1.0, metadata=_range(0, 600))


@dataclass(frozen=True, slots=True)
class LogSettings:
    """``[log]``."""

    level: str = field(default="info", metadata={"choices": ("debug", "info", "warning", "error")})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of one broker process."""

    server: ServerSettings = ServerSettings()
    stream: StreamSettings = StreamSettings()
    history: HistorySettings = HistorySettings()
    storage: StorageSettings = StorageSettings()
    limits: LimitSettings = LimitSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    auth: AuthSettings = AuthSettings()
    cors: CorsSettings = CorsSettings()
    tls: TlsSettings = TlsSettings()
    cluster: ClusterSettings = ClusterSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    log: LogSettings = LogSettings()

    def replace(self, **tables: Mapping[str, Any]) -> Settings:
        """A copy with some values changed: ``settings.replace(server={"port": 0})``."""
        document = {name: _as_dict(table) for name, table in _as_dict(self).items()}
        for name, values in tables.items():
            document[name].update(values)
        return _build(document, "override")


def _as_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _coerce(where: str, value: Any, default: Any, meta: Mapping[str, Any]) -> Any:
    kind = type(default)
    if kind is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(value, str) and kind is bool:
        text = value.strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        value = text in ("true", "1", "yes", "on")
    elif isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            value = int(text) if kind is int else float(text) if kind is float else text
        except ValueError:
            raise ConfigError(f"{where}: expected a {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) != isinstance(default, bool):
        raise ConfigError(f"{where}: expected a {kind.__name__}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{where}: {value!r} is out of range [{low}, {high}]")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def _build(document: Mapping[str, Any], source: str) -> Settings:
    tables: dict[str, Any] = {}
    for table_field in fields(Settings):
        table_cls: Any = type(table_field.default)  # each table field defaults to an instance
        raw = document.get(table_field.name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: [{table_field.name}] must be a table")
        known = {f.name: f for f in fields(table_cls)}
        unknown = set(raw) - set(known)
        if unknown:
            raise ConfigError(f"{source}: unknown key [{table_field.name}] {sorted(unknown)[0]}")
        values = {}
        for name, value in raw.items():
            spec = known[name]
            values[name] = _coerce(
                f"{source}: [{table_field.name}] {name}", value, spec.default, spec.metadata
            )
        tables[table_field.name] = table_cls(**values)
    unknown_tables = set(document) - {f.name for f in fields(Settings)}
    if unknown_tables:
        raise ConfigError(f"{source}: unknown table [{sorted(unknown_tables)[0]}]")
    return Settings(**tables)


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build the settings from a TOML file, the environment and flag overrides.

    Args:
        path: a ``config.toml``; ``None`` uses the defaults alone.
        environ: the environment (``os.environ`` in production, a dict in tests).
        overrides: ``{"server": {"port": 0}}`` from command-line flags; wins over all.

    Raises:
        ConfigError: naming the file, table and key of the first bad value.
    """
    document: dict[str, dict[str, Any]] = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    settings = _build(document, source)
    merged = {k: dict(v) for k, v in _as_dict(settings).items() for v in [_as_dict(v)]}
    for name, value in (environ or {}).items():
        if not name.startswith("BROKER_"):
            continue
        table, _, key = name[len("BROKER_") :].lower().partition("_")
        if table not in merged or key not in merged[table]:
            raise ConfigError(f"environment: unknown variable {name}")
        merged[table][key] = _coerce(
            f"environment: {name}",
            value,
            getattr(getattr(Settings(), table), key),
            {f.name: f for f in fields(type(getattr(Settings(), table)))}[key].metadata,
        )
    for table, values in (overrides or {}).items():
        merged[table].update(values)
    settings = _build(merged, "flags" if overrides else source)
    auth = settings.auth
    if auth.algorithm == "HS256" and auth.public_key_file:
        raise ConfigError(f"{source}: [auth] public_key_file needs algorithm RS256 or ES256")
    if auth.algorithm != "HS256" and auth.secret:
        raise ConfigError(
            f"{source}: [auth] secret is for HS256; {auth.algorithm} needs public_key_file"
        )
    if auth.public_key_file and not Path(auth.public_key_file).is_file():
        raise ConfigError(f"{source}: [auth] public_key_file {auth.public_key_file!r} not found")
    if auth.secret and len(auth.secret.encode()) < 32:
        raise ConfigError(f"{source}: [auth] secret must be at least 32 bytes (RFC 7518 3.2)")
    tls = settings.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError(f"{source}: [tls] needs both cert_file and key_file")
    for name in ("cert_file", "key_file"):
        value = getattr(tls, name)
        if value and not Path(value).is_file():
            raise ConfigError(f"{source}: [tls] {name} {value!r} not found")
    if settings.cors.allow_credentials and "*" in settings.cors.allow_origins:
        raise ConfigError(
            f"{source}: [cors] allow_credentials needs an explicit list of origins, not '*'"
        )
    cluster = settings.cluster
    mesh = cluster.enabled and cluster.engine == "mesh"
    if mesh and not cluster.secret:
        raise ConfigError(
            f"{source}: [cluster] secret is required when the cluster is enabled "
            "(or set BROKER_CLUSTER_SECRET)"
        )
    if cluster.engine == "redis":
        _check_redis(source, settings)
    if mesh:
        _check_peer_tls(source, cluster)
    if mesh and cluster.max_frame_bytes < settings.limits.max_body_bytes + 1024:
        raise ConfigError(
            f"{source}: [cluster] max_frame_bytes must exceed [limits] max_body_bytes"
        )
    if settings.limits.max_body_bytes * 2 > settings.stream.queue_bytes:
        raise ConfigError(
            f"{source}: [stream] queue_bytes must be at least twice [limits] max_body_bytes"
        )
    return settings


def _check_redis(source: str, settings: Settings) -> None:
    from .engines.redis.address import parse_redis_url  # sans-IO; no Redis client import

    cluster = settings.cluster
    if not cluster.enabled:
        raise ConfigError(f'{source}: [cluster] engine = "redis" needs enabled = true')
    try:
        address = parse_redis_url(cluster.redis_url)
    except ValueError as exc:
        raise ConfigError(f"{source}: [cluster] redis_url: {exc}") from None
    tls_files = {
        name: getattr(cluster, name)
        for name in ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    }
    if any(tls_files.values()) and not address.tls:
        raise ConfigError(
            f"{source}: [cluster] redis_tls_* files need a TLS redis_url "
            "(rediss://, rediss+cluster:// or rediss+sentinel://)"
        )
    if bool(cluster.redis_tls_cert_file) != bool(cluster.redis_tls_key_file):
        raise ConfigError(
            f"{source}: [cluster] redis_tls_cert_file and redis_tls_key_file go together"
        )
    for name, value in tls_files.items():
        if value and not Path(value).is_file():
            raise ConfigError(f"{source}: [cluster] {name} {value!r} not found")
    if not _KEY_PREFIX.fullmatch(cluster.redis_key_prefix):
        raise ConfigError(
            f"{source}: [cluster] redis_key_prefix must be 1-64 characters of "
            f"A-Z a-z 0-9 _ . : -, got {cluster.redis_key_prefix!r}"
        )
    if settings.history.size < 1:
        raise ConfigError(f"{source}: [history] size must be at least 1 with the redis engine")


def _check_peer_tls(source: str, cluster: ClusterSettings) -> None:
    files = {name: getattr(cluster, name) for name in ("tls_cert", "tls_key", "tls_ca")}
    if not any(files.values()):
        return
    for name, value in files.items():
        if not value:
            raise ConfigError(
                f"{source}: [cluster] {name} is missing: tls_cert, tls_key and tls_ca go together"
            )
        if not Path(value).is_file():
            raise ConfigError(f"{source}: [cluster] {name} {value!r} not found")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files["tls_cert"], files["tls_key"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{source}: [cluster] tls_cert/tls_key: not a certificate and its key ({exc})"
        ) from None
    try:
        context.load_verify_locations(cafile=files["tls_ca"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{source}: [cluster] tls_ca: not a CA certificate ({exc})") from None


_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

__all__ = ["Settings", "load_settings"]
