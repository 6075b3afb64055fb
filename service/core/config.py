"""Configuration: config.toml decoded into typed Structs, overridable by TIDINGS_<SECTION>_<KEY>.

Parsed once by each entry point and passed down; nothing here runs at import time.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class RedisConfig(_Section, frozen=True):
    url: str = "embedded"
    prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,40}$")] = "tidings"
    partitions: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    embedded_dir: str = "var"
    cluster: bool = False
    sentinels: list[str] = msgspec.field(default_factory=list)
    sentinel_master: str = "mymaster"
    wait_replicas: Annotated[int, msgspec.Meta(ge=0, le=16)] = 0
    wait_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 500
    socket_timeout_s: Annotated[float, msgspec.Meta(gt=2.5)] = 5.0


class HttpConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    processes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    max_body_bytes: PositiveInt = 1 << 20
    public_url: str = ""
    cors_origins: list[str] = msgspec.field(default_factory=list)
    keepalive_s: Positive = 15.0
    trust_proxy: bool = False
    metrics_public: bool = True


class JobsConfig(_Section, frozen=True):
    lease_s: Positive = 30.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    timeout_s: NonNegative = 0.0
    retention_s: Positive = 86400.0
    backoff_base_s: NonNegative = 1.0
    backoff_cap_s: NonNegative = 300.0
    max_events: Annotated[int, msgspec.Meta(ge=10)] = 1000
    max_queued: Annotated[int, msgspec.Meta(ge=0)] = 0
    firehose_maxlen: Annotated[int, msgspec.Meta(ge=100)] = 100_000
    max_queues: Annotated[int, msgspec.Meta(ge=0)] = 100


class WorkersConfig(_Section, frozen=True):
    tasks: list[str] = msgspec.field(default_factory=lambda: ["workers.demo"])
    processes: Annotated[int, msgspec.Meta(ge=1, le=256)] = 2
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 32
    queues: list[str] = msgspec.field(default_factory=lambda: ["default"])
    grace_s: NonNegative = 10.0
    progress_interval_s: NonNegative = 0.02
    poll_s: Positive = 0.5
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    metrics_host: str = "127.0.0.1"


class SseConfig(_Section, frozen=True):
    heartbeat_s: Positive = 15.0
    max_connections: PositiveInt = 10_000
    max_per_client: Annotated[int, msgspec.Meta(ge=0)] = 0
    write_timeout_s: Positive = 10.0
    max_buffer_bytes: PositiveInt = 256 * 1024
    max_age_s: NonNegative = 0.0
    retry_ms: Annotated[int, msgspec.Meta(ge=0)] = 2000
    stats_interval_s: Annotated[float, msgspec.Meta(ge=0.1, le=60)] = 1.0


class AuthConfig(_Section, frozen=True):
    # no empty or blank key: `[""]` must not read as "no keys" (auth off)
    api_keys: list[Annotated[str, msgspec.Meta(pattern=r"^\S{1,512}$")]] = msgspec.field(
        default_factory=list
    )
    signing_key: str = ""
    token_ttl_s: Positive = 86400.0
    submit_rate: NonNegative = 0.0


class LogConfig(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Section, frozen=True):
    redis: RedisConfig = RedisConfig()
    http: HttpConfig = HttpConfig()
    jobs: JobsConfig = JobsConfig()
    workers: WorkersConfig = WorkersConfig()
    sse: SseConfig = SseConfig()
    auth: AuthConfig = AuthConfig()
    log: LogConfig = LogConfig()


class ConfigError(Exception):
    """Invalid configuration; the message is one line naming the key."""


_SECTIONS: dict[str, type[_Section]] = {
    "redis": RedisConfig,
    "http": HttpConfig,
    "jobs": JobsConfig,
    "workers": WorkersConfig,
    "sse": SseConfig,
    "auth": AuthConfig,
    "log": LogConfig,
}


def _env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for section, struct in _SECTIONS.items():
        for f in msgspec.structs.fields(struct):
            name = f"TIDINGS_{section}_{f.name}".upper()
            if name not in environ:
                continue
            value: Any = environ[name]
            if "list" in str(f.type):
                value = [v.strip() for v in value.split(",") if v.strip()]
            raw.setdefault(section, {})[f.name] = value


def load(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the TOML file (path, else $TIDINGS_CONFIG, else ./config.toml if present) and the
    environment overrides. Raises ConfigError naming the bad key."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get("TIDINGS_CONFIG") or (
            "config.toml" if Path("config.toml").exists() else None
        )
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"config: cannot read {path}: {e}") from e
    _env_overrides(raw, environ)
    try:
        # strict=False lets environment strings become ints, floats and bools
        return msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"config: {_keyname(str(e))}") from e


def _keyname(message: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.http.port`"; turn the path into a key
    text, _, where = message.partition(" - at `$.")
    if not where:
        return message
    key = where.rstrip("`")
    env = "TIDINGS_" + key.replace(".", "_").upper()
    return f"{key} (or {env}): {text}"


def load_or_exit(path: str | None) -> Config:
    """For entry points: the config, or one line on stderr and exit status 2."""
    try:
        return load(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None
