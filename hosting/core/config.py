"""The one frozen ``HostConfig``: built-in defaults <- CONNECTONION_ENV <- .co/host.yaml <- arguments.

Arguments given to ``runhost`` or ``host()`` travel to every worker process as JSON in the
``CONNECTONION_HOST_ARGS`` environment variable, so each process rebuilds the same config.
This is the only module that reads ``os.environ`` or ``.env`` files; ``hosting.core.hostyaml`` reads host.yaml.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from hosting.core.hostyaml import (
    address_list,
    integer,
    log_format_value,
    networks,
    number,
    read_host_yaml,
    shown,
)
from hosting.core.project import find_project_dir, load_env_files, secret_key
from trust.decision import TrustSettings, trust_settings

ARGS_ENV = "CONNECTONION_HOST_ARGS"
DEFAULT_AGENT = "hosting.demo:create_agent"
DEFAULT_RELAY_URL = "wss://oo.openonion.ai/ws/announce"
LEVELS = ("open", "careful", "strict")
ENV_TRUST = {"development": "open", "test": "careful", "staging": "careful", "production": "strict"}
MB = 1024 * 1024


STORES = ("jsonl", "postgres")  # issue 18: the embedded default first
REPLAY_LOGS = ("sqlite", "redis")


@dataclass(frozen=True)
class HostConfig:
    """Everything the host needs to know, validated once at start-up."""

    agent: str = DEFAULT_AGENT
    project_dir: Path = field(default_factory=Path.cwd)
    bind: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    reload: bool = False
    trust: str = "careful"
    trust_explicit: bool = False
    blacklist: tuple[str, ...] = ()
    whitelist: tuple[str, ...] = ()
    result_ttl: int = 86400
    relay_url: str | None = DEFAULT_RELAY_URL
    max_file_size: int = 10
    max_files_per_request: int = 10
    max_request_mb: float = 0.0
    pool_size: int = 128
    turn_timeout: float = 900.0
    answer_timeout: float = 3600.0
    shutdown_grace: float = 30.0
    ws_ping_interval: float = 30.0
    ws_pong_timeout: float = 90.0
    signature_window: float = 300.0
    rate_limit_per_minute: float = 60.0
    rate_limit_burst: int = 20
    max_turns_per_identity: int = 8
    max_turns_per_ip: int = 32
    max_ws_per_ip: int = 256
    header_timeout: float = 30.0
    body_timeout: float = (
        30.0  # then 1 s more per 500 bytes received (hosting.serving.asgi_limits.BODY_MIN_RATE); then 408
    )
    max_connections_per_ip: int = 512
    bodies_in_flight_mb: float | None = None  # None: derived from max_request_mb (see load_config)
    ws_send_buffer_mb: float = 16.0  # bytes a socket may owe a client that does not read; then close 4413
    ws_max_frames_per_second: float = 200.0  # client frames per socket (PONG too); then close 4429
    trusted_proxies: tuple[str, ...] = ()
    redis_url: str | None = None
    database_url: str | None = None
    store: str = "jsonl"  # where session results live: jsonl (.co/) or postgres (database_url), issue 18
    replay_log: str = "sqlite"  # where replay events live: sqlite (.co/) or redis (redis_url)
    lease_seconds: float = 10.0  # store: postgres: a worker silent this long is dead, its turns interrupted (D30)
    summary: str | None = None
    name: str | None = None
    examples: tuple[str, ...] = ()
    strict_requires_whitelist: bool = False
    announce_loopback: bool = True
    allowed_origins: tuple[str, ...] = ()
    # Observability (hosting/observability): GET /metrics, OpenTelemetry traces, JSON log lines.
    metrics: bool = True
    tracing: bool = False
    otlp_endpoint: str | None = None
    trace_content: bool = False
    log_format: str = "text"
    public_domain: str | None = None
    environment: str | None = None
    api_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    machine_dir: Path | None = None
    loaded_env_files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    worker: int | None = None  # --workers N: this process's index (CONNECTONION_WORKER); None when serving alone
    trust_settings: TrustSettings | None = field(default=None, repr=False, compare=False)  # the policy's model

    # -- derived paths -------------------------------------------------------------------------------
    @property
    def co_dir(self) -> Path:
        return self.project_dir / ".co"

    @property
    def results_path(self) -> Path:
        return self.co_dir / "session_results.jsonl"

    @property
    def uploads_dir(self) -> Path:
        return self.co_dir / "uploads"

    @property
    def logs_dir(self) -> Path:
        return self.co_dir / "logs"

    @property
    def host_yaml(self) -> Path:
        return self.co_dir / "host.yaml"

    @property
    def max_request_bytes(self) -> int:
        """One cap for HTTP bodies and WS messages (PROTOCOL D24)."""
        return int(self.max_request_mb * MB)

    @property
    def trust_level(self) -> str:
        """The level name, or ``custom`` for a policy text/file (never the policy itself)."""
        return self.trust if self.trust in LEVELS else "custom"

    def to_args_json(self) -> str:
        """Serialise for child processes (paths and tuples become JSON types)."""
        data = asdict(self)
        data["project_dir"] = str(self.project_dir)
        for secret in (
            "api_key",
            "admin_token",
            "secret_key",
            "machine_dir",
            "loaded_env_files",
            "warnings",
            "environment",
            "public_domain",
            "trust_explicit",
            "worker",
            "trust_settings",
        ):
            data.pop(secret, None)  # re-read from the environment in each worker, never passed around
        return json.dumps(data)


_TUPLE_FIELDS = {f.name for f in fields(HostConfig) if str(f.type).startswith("tuple")}


def _derive_request_cap(cfg: HostConfig) -> float:
    # Files and images at their limits, base64-inflated, plus 1 MiB of JSON (PROTOCOL D24).
    from hosting.core.uploads import max_request_bytes

    return max_request_bytes(cfg.max_file_size, cfg.max_files_per_request) / MB


def use_settings_module(name: str) -> None:
    """Django's ``DJANGO_SETTINGS_MODULE``, unless one is set already (``host()``, workers, the ASGI module)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", name)


def export_args(given: dict[str, Any]) -> bool:
    """Put command-line options into ``CONNECTONION_HOST_ARGS`` for the settings (and any child process) to
    build the config from. False when they were there already."""
    text = json.dumps(given, sort_keys=True)
    if os.environ.get(ARGS_ENV) == text:
        return False
    os.environ[ARGS_ENV] = text
    return True


def _environment_values(
    env: Mapping[str, str], environment: str | None, args: dict[str, Any], yaml_values: dict[str, Any]
) -> dict[str, Any]:
    """What the environment sets: above the defaults, below host.yaml (except D6's trust) and the arguments."""
    values: dict[str, Any] = {}
    if "trust" not in args and environment in ENV_TRUST:
        values["trust"] = ENV_TRUST[environment]  # D6: the environment beats host.yaml's trust
    if "port" not in args and env.get("AGENT_PORT"):
        try:
            values["port"] = int(env["AGENT_PORT"])
        except ValueError:
            raise ConfigError(f"AGENT_PORT must be an integer (got {env['AGENT_PORT']!r})") from None
    if env.get("REDIS_URL") and "redis_url" not in yaml_values:
        values["redis_url"] = env["REDIS_URL"]
    if env.get("DATABASE_URL") and "database_url" not in yaml_values:
        values["database_url"] = env["DATABASE_URL"]
    for key, name in (("store", "CONNECTONION_STORE"), ("replay_log", "CONNECTONION_REPLAY_LOG")):
        if env.get(name) and key not in yaml_values:
            values[key] = env[name]
    if env.get("CONNECTONION_AGENT") and "agent" not in yaml_values:
        values["agent"] = env["CONNECTONION_AGENT"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") and "tracing" not in yaml_values:
        values["tracing"] = True  # the standard variable turns tracing on; host.yaml's tracing: false wins
    return values


def load_config(args: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None) -> HostConfig:
    """Build the config. ``args`` are the explicitly given options (CLI or ``host()``).

    Without ``args``, the JSON in ``CONNECTONION_HOST_ARGS`` is used (set by ``runhost`` for workers).
    Raises ``ConfigError`` naming the source, key and value of the first bad setting.
    """
    env = os.environ if environ is None else environ
    if args is None:
        raw = env.get(ARGS_ENV)
        args = json.loads(raw) if raw else {}
    args = dict(args)
    project_dir = Path(args.pop("project_dir", None) or find_project_dir()).resolve()
    loaded = load_env_files(project_dir, env) if environ is None else ()

    values: dict[str, Any] = {"project_dir": project_dir}
    yaml_values = read_host_yaml(project_dir / ".co" / "host.yaml")
    values.update(yaml_values)

    environment = env.get("CONNECTONION_ENV") or None
    values.update(_environment_values(env, environment, args, yaml_values))
    known = {f.name for f in fields(HostConfig)}
    for key, value in args.items():
        if key not in known:
            raise ConfigError(f"unknown option {key!r}")
        if key in ("blacklist", "whitelist") and value is not None and values.get(key):
            # Access lists add up: an argument never drops what host.yaml blocks or admits.
            given = address_list(key, value)
            values[key] = tuple(values[key]) + tuple(v for v in given if v not in values[key])
        elif value is not None or key in ("relay_url", "redis_url"):
            values[key] = value
    values["trust_explicit"] = "trust" in args
    for key in _TUPLE_FIELDS:
        if key in values and values[key] is not None:
            values[key] = tuple(values[key])
        elif key in values:
            values[key] = ()

    cfg = HostConfig(**values)
    _validate(cfg)
    backend = env.get("CONNECTONION_BACKEND_URL") or env.get("OPENONION_API_URL") or env.get("OPENONION_BASE_URL")
    if backend and "relay_url" not in args and "relay_url" not in yaml_values:
        cfg = replace(cfg, relay_url=backend.replace("https://", "wss://").replace("http://", "ws://"))
    if not cfg.max_request_mb:
        cfg = replace(cfg, max_request_mb=_derive_request_cap(cfg))
    cfg = _bodies_budget(cfg)
    return replace(
        cfg,
        environment=environment,
        public_domain=env.get("AGENT_PUBLIC_DOMAIN") or None,
        api_key=env.get("OPENONION_API_KEY") or None,
        admin_token=env.get("CONNECTONION_ADMIN_TOKEN") or None,
        secret_key=secret_key(cfg.co_dir, env),
        machine_dir=Path(env.get("AGENT_CONFIG_PATH") or Path.home() / ".co"),
        loaded_env_files=loaded,
        worker=_worker_index(env),
        trust_settings=trust_settings(env),
    )


WORKER_ENV = "CONNECTONION_WORKER"  # set by the supervisor (hosting.serving.server.run) in each worker's environment


def _worker_index(env: Mapping[str, str]) -> int | None:
    raw = env.get(WORKER_ENV)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{WORKER_ENV} must be a worker index (got {raw!r})") from None


DEFAULT_BODIES_IN_FLIGHT_MB = 512.0


def _bodies_budget(cfg: HostConfig) -> HostConfig:
    """Room for the bodies of requests in progress together: 512 MiB, or one maximum-size body if larger.

    A budget set smaller than one body would refuse every maximum-size request: that is a mistake."""
    if cfg.bodies_in_flight_mb is None:
        return replace(cfg, bodies_in_flight_mb=max(DEFAULT_BODIES_IN_FLIGHT_MB, cfg.max_request_mb))
    if cfg.bodies_in_flight_mb and cfg.bodies_in_flight_mb < cfg.max_request_mb:
        raise ConfigError(
            f"bodies_in_flight_mb must be at least the request cap of {cfg.max_request_mb:.1f} MB, "
            f"or 0 for no budget (got {shown(cfg.bodies_in_flight_mb)})"
        )
    return cfg


def _validate(cfg: HostConfig) -> None:
    if cfg.store not in STORES:
        raise ConfigError(f"store must be one of {', '.join(STORES)} (got {shown(cfg.store)})")
    if cfg.store == "postgres" and not (cfg.database_url or "").startswith(("postgres://", "postgresql://")):
        raise ConfigError(
            "store: postgres needs a PostgreSQL database_url (host.yaml database_url, --database-url "
            "or DATABASE_URL=postgres://...)"
        )
    if cfg.replay_log not in REPLAY_LOGS:
        raise ConfigError(f"replay_log must be one of {', '.join(REPLAY_LOGS)} (got {shown(cfg.replay_log)})")
    if cfg.replay_log == "redis" and not cfg.redis_url:
        raise ConfigError("replay_log: redis needs redis_url (host.yaml redis_url, --redis-url or REDIS_URL)")
    for key in ("port", "workers", "result_ttl", "max_file_size", "max_files_per_request", "pool_size"):
        integer(1)(key, getattr(cfg, key))
    if cfg.port > 65535:
        raise ConfigError(f"port must be at most 65535 (got {cfg.port})")
    if cfg.pool_size > 4096:
        raise ConfigError(f"pool_size must be at most 4096 (got {cfg.pool_size})")
    for key in ("turn_timeout", "answer_timeout", "ws_ping_interval", "ws_pong_timeout"):
        number(0.001)(key, getattr(cfg, key))
    number(0)("rate_limit_per_minute", cfg.rate_limit_per_minute)
    integer(1)("rate_limit_burst", cfg.rate_limit_burst)
    for key in ("max_turns_per_identity", "max_turns_per_ip", "max_ws_per_ip", "max_connections_per_ip"):
        integer(0)(key, getattr(cfg, key))
    number(0)("header_timeout", cfg.header_timeout)
    number(0)("body_timeout", cfg.body_timeout)
    if cfg.bodies_in_flight_mb is not None:
        number(0)("bodies_in_flight_mb", cfg.bodies_in_flight_mb)
    for key in ("ws_send_buffer_mb", "ws_max_frames_per_second"):
        number(0)(key, getattr(cfg, key))
    networks("trusted_proxies", list(cfg.trusted_proxies))
    number(0)("shutdown_grace", cfg.shutdown_grace)
    log_format_value("log_format", cfg.log_format)
    if ":" not in cfg.agent:
        raise ConfigError(f"agent must be an import path 'module:attribute' (got {cfg.agent!r})")
    if cfg.relay_url is not None and not cfg.relay_url.startswith(("ws://", "wss://")):
        raise ConfigError(f"relay_url must start with ws:// or wss:// (got {cfg.relay_url!r})")
