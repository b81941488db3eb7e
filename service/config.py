"""Settings: the only place that reads the environment (prefix ``HR_``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

Durability = Literal["fsync", "write", "none"]
PriorityScope = Literal["bucket", "timestamp"]
AuthMode = Literal["auto", "on", "off"]
Listen = Literal["loopback", "network"]
StoreKind = Literal["local", "delta"]

DEFAULT_PRIORITY = "device_a:1,device_b:2"

_T = TypeVar("_T", bound=str)


class ConfigError(ValueError):
    """A setting is malformed; raised at start-up so a bad deployment fails loudly."""


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("data")
    flush_rows: int = 25_000
    flush_interval_s: float = 15.0
    durability: Durability = "fsync"
    device_priority: Mapping[str, int] = field(
        default_factory=lambda: {"device_a": 1, "device_b": 2}
    )
    priority_scope: PriorityScope = "bucket"
    max_batch: int = 10_000
    max_batch_days: int = 31
    max_body_bytes: int = 8 * 1024 * 1024
    body_timeout_s: float = 30.0  # the whole body, from the end of the header block
    header_timeout_s: float = 10.0  # the whole header block, from its first byte
    max_buckets: int = 44_640  # buckets a series may hold: 31 days of minutes
    max_buffer_rows: int = 500_000
    lock_timeout_s: float = 10.0
    recovery_interval_s: float = 5.0
    min_free_bytes: int = 64 * 1024 * 1024
    compact_interval_s: float = 30.0
    compact_min_files: int = 8
    compact_grace_s: float = 120.0
    compact_max_rows: int = 400_000  # input rows per merge step: ~120 MB at the peak
    rollup_cache_bytes: int = 64 * 1024 * 1024
    retention_days: int = 0  # raw readings older than this many whole UTC days: 0 = forever
    rollup_retention_days: int = 0  # per-minute rollups likewise: 0 = forever
    log_level: str = "INFO"
    log_format: Literal["auto", "text", "json"] = "auto"
    access_log: bool = True
    stream_keepalive_s: float = 15.0  # a comment line on an idle event stream
    stream_tick_s: float = 0.1  # how often the stream watcher looks for new readings
    master_pid: int = 0  # set by gunicorn.conf.py in each worker; 0 outside gunicorn
    auth: AuthMode = "auto"
    # set by gunicorn.conf.py from its binds; outside gunicorn nothing listens (tests)
    listen: Listen = "loopback"
    cors_origins: tuple[str, ...] = ()
    store: StoreKind = "local"  # where flushed rows go: this data dir, or a shared Delta table
    table_uri: str = ""  # HR_STORE=delta: a local path or s3://bucket/prefix
    # the AWS_* variables, passed to the table's object store as they are (secrets: no repr)
    table_options: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        settings = cls._read(env)
        if settings.max_batch > settings.max_buffer_rows:
            # such a batch could never be buffered: every request of that size would be refused
            raise ConfigError(
                f"HR_MAX_BATCH={settings.max_batch} is larger than "
                f"HR_MAX_BUFFER_ROWS={settings.max_buffer_rows}"
            )
        rollups, raw = settings.rollup_retention_days, settings.retention_days
        if rollups and not 0 < raw <= rollups:
            # rollups are what is left of a day once its raw readings are gone
            raise ConfigError(
                f"HR_ROLLUP_RETENTION_DAYS={rollups} needs HR_RETENTION_DAYS between 1 and "
                f"{rollups} (it is {raw}): rollups outlive raw readings, never the reverse"
            )
        if settings.store == "delta":
            check_table_uri(settings.table_uri)
        return settings

    # longer than 40 lines: one line per setting, each with its variable, default and bounds
    @classmethod
    def _read(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            data_dir=Path(env.get("HR_DATA_DIR", "data")),
            flush_rows=_int(env, "HR_FLUSH_ROWS", 25_000, minimum=1),
            flush_interval_s=_float(env, "HR_FLUSH_INTERVAL_S", 15.0, minimum=0.01),
            durability=_choice(env, "HR_DURABILITY", "fsync", ("fsync", "write", "none")),
            device_priority=parse_priority(env.get("HR_DEVICE_PRIORITY", DEFAULT_PRIORITY)),
            priority_scope=_choice(env, "HR_PRIORITY_SCOPE", "bucket", ("bucket", "timestamp")),
            max_batch=_int(env, "HR_MAX_BATCH", 10_000, minimum=1),
            max_batch_days=_int(env, "HR_MAX_BATCH_DAYS", 31, minimum=1),
            max_body_bytes=_int(env, "HR_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024),
            body_timeout_s=_float(env, "HR_BODY_TIMEOUT_S", 30.0, minimum=0.01, maximum=3600),
            header_timeout_s=_float(env, "HR_HEADER_TIMEOUT_S", 10.0, minimum=0.01, maximum=3600),
            max_buckets=_int(env, "HR_MAX_BUCKETS", 44_640, minimum=1),
            max_buffer_rows=_int(env, "HR_MAX_BUFFER_ROWS", 500_000, minimum=1),
            lock_timeout_s=_float(env, "HR_LOCK_TIMEOUT_S", 10.0, minimum=0.01),
            recovery_interval_s=_float(env, "HR_RECOVERY_INTERVAL_S", 5.0, minimum=0.01),
            min_free_bytes=_int(env, "HR_MIN_FREE_BYTES", 64 * 1024 * 1024, minimum=0),
            compact_interval_s=_float(env, "HR_COMPACT_INTERVAL_S", 30.0, minimum=0.01),
            compact_min_files=_int(env, "HR_COMPACT_MIN_FILES", 8, minimum=2),
            compact_grace_s=_float(env, "HR_COMPACT_GRACE_S", 120.0, minimum=0.0),
            compact_max_rows=_int(env, "HR_COMPACT_MAX_ROWS", 400_000, minimum=1000),
            rollup_cache_bytes=_int(env, "HR_ROLLUP_CACHE_MB", 64, minimum=0) * 1024 * 1024,
            retention_days=_int(env, "HR_RETENTION_DAYS", 0, minimum=0),
            rollup_retention_days=_int(env, "HR_ROLLUP_RETENTION_DAYS", 0, minimum=0),
            log_level=_choice(
                env, "HR_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True
            ),
            log_format=_choice(env, "HR_LOG_FORMAT", "auto", ("auto", "text", "json")),
            access_log=_choice(env, "HR_ACCESS_LOG", "on", ("on", "off")) == "on",
            stream_keepalive_s=_float(env, "HR_STREAM_KEEPALIVE_S", 15.0, minimum=0.01),
            stream_tick_s=_float(env, "HR_STREAM_TICK_S", 0.1, minimum=0.01, maximum=1.0),
            master_pid=_int(env, "HR_MASTER_PID", 0, minimum=0),
            auth=_choice(env, "HR_AUTH", "auto", ("auto", "on", "off")),
            listen=_choice(env, "HR_LISTEN", "loopback", ("loopback", "network")),
            cors_origins=parse_origins(env.get("HR_CORS_ORIGINS", "")),
            store=_choice(env, "HR_STORE", "local", ("local", "delta")),
            table_uri=env.get("HR_TABLE_URI", "").strip(),
            table_options={k: v for k, v in env.items() if k.startswith("AWS_")},
        )

    @property
    def auth_required(self) -> bool:
        """Whether every request needs a key even while no key exists (``auto`` on loopback
        needs one only once a key has been created)."""
        return self.auth == "on" or (self.auth == "auto" and self.listen == "network")


def parse_priority(text: str) -> dict[str, int]:
    """Parse ``device:rank,device:rank``; a lower rank wins."""
    ranks: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        device, sep, rank = item.rpartition(":")
        if not sep or not device or not rank.strip().lstrip("-").isdigit():
            raise ConfigError(f"HR_DEVICE_PRIORITY item {item!r} is not 'device:rank'")
        ranks[device.strip()] = int(rank)
    return ranks


def parse_origins(text: str) -> tuple[str, ...]:
    """``HR_CORS_ORIGINS``: ``*`` or a comma list of ``scheme://host[:port]``."""
    origins = tuple(filter(None, (part.strip().rstrip("/") for part in text.split(","))))
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        good = scheme in ("http", "https") and sep and host and "/" not in host
        if origin != "*" and not good:
            raise ConfigError(f"HR_CORS_ORIGINS item {origin!r} is not '*' or scheme://host[:port]")
    return origins


def check_table_uri(uri: str) -> None:
    """``HR_TABLE_URI`` for ``HR_STORE=delta``: ``s3://bucket[/prefix]`` or a local path."""
    if not uri:
        raise ConfigError(
            "HR_STORE=delta needs HR_TABLE_URI: s3://bucket/prefix or a local directory"
        )
    scheme, sep, rest = uri.partition("://")
    if sep and (scheme != "s3" or not rest.split("/", 1)[0]):
        # other object stores lack the put-if-absent check this service relies on
        raise ConfigError(f"HR_TABLE_URI={uri!r} is not s3://bucket[/prefix] or a local path")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer") from exc
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is below the minimum {minimum}")
    return value


def _float(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float = float("inf"),
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc
    if not value >= minimum:
        raise ConfigError(f"{name}={raw!r} is below the minimum {minimum}")
    if value > maximum:
        raise ConfigError(f"{name}={raw!r} is above the maximum {maximum:g}")
    return value


def _choice(
    env: Mapping[str, str], name: str, default: _T, allowed: tuple[_T, ...], *, upper: bool = False
) -> _T:
    raw = env.get(name, "") or default
    value = raw.upper() if upper else raw.lower()
    for option in allowed:
        if option == value:
            return option
    raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
