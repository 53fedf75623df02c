"""The one frozen ``HostConfig``: built-in defaults <- CONNECTONION_ENV <- .co/host.yaml <- arguments.

Arguments given to ``runhost`` or ``host()`` travel to every worker process as JSON in the
``CONNECTONION_HOST_ARGS`` environment variable, so each process rebuilds the same config.
This is the only module that reads ``os.environ``, ``.env`` files or host.yaml.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import reprlib
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hosting.errors import ConfigError

ARGS_ENV = "CONNECTONION_HOST_ARGS"
DEFAULT_AGENT = "hosting.demo:create_agent"
DEFAULT_RELAY_URL = "wss://oo.openonion.ai/ws/announce"
LEVELS = ("open", "careful", "strict")
ENV_TRUST = {"development": "open", "test": "careful", "staging": "careful", "production": "strict"}
MB = 1024 * 1024


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
    trusted_proxies: tuple[str, ...] = ()
    redis_url: str | None = None
    database_url: str | None = None
    summary: str | None = None
    name: str | None = None
    examples: tuple[str, ...] = ()
    strict_requires_whitelist: bool = False
    announce_loopback: bool = True
    allowed_origins: tuple[str, ...] = ()
    public_domain: str | None = None
    environment: str | None = None
    api_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    machine_dir: Path | None = None
    loaded_env_files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

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
        for secret in ("api_key", "admin_token", "secret_key", "machine_dir", "loaded_env_files", "warnings",
                       "environment", "public_domain", "trust_explicit"):
            data.pop(secret, None)  # re-read from the environment in each worker, never passed around
        return json.dumps(data)


def _shown(value: Any) -> str:
    """A bounded repr for error lines: an alias bomb or a huge list never expands (HARDENING F6)."""
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


# Options a host.yaml may set, with the type checker used for each.
def _int(minimum: int = 0):
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer (got {_shown(value)})")
        if value < minimum:
            raise ConfigError(f"{key} must be at least {minimum} (got {_shown(value)})")
        return value

    return check


def _number(minimum: float = 0.0):
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key} must be a number (got {_shown(value)})")
        if value < minimum:
            raise ConfigError(f"{key} must be at least {minimum} (got {_shown(value)})")
        return float(value)

    return check


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false (got {_shown(value)})")
    return value


def _str_or_none(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string (got {_shown(value)})")
    return value


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string (got {_shown(value)})")
    return value


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a list of strings (got {_shown(value)})")
    return tuple(value)


def _address_list(key: str, value: Any) -> tuple[str, ...]:
    """Like ``_str_list``, but an unquoted ``0x...`` address that YAML read as an integer is restored."""
    if isinstance(value, list | tuple):
        value = [f"0x{v:064x}" if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**256 else v
                 for v in value]
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**256:
        value = f"0x{value:064x}"
    return _str_list(key, value)


def _networks(key: str, value: Any) -> tuple[str, ...]:
    """IP addresses or CIDR networks (``trusted_proxies``)."""
    values = _str_list(key, value)
    for item in values:
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"{key} must list IP addresses or networks (got {_shown(item)})") from None
    return values


def _trust(key: str, value: Any) -> str:
    if isinstance(value, dict):
        # A mapping policy (PROTOCOL §7.1 form 4) is kept as YAML front matter text.
        import yaml

        return "---\n" + yaml.safe_dump(value, sort_keys=False) + "---\n"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a trust level, a policy text or a policy file (got {_shown(value)})")
    return value


YAML_KEYS: dict[str, Any] = {
    "agent": _str,
    "host": _str,
    "port": _int(1),
    "workers": _int(1),
    "reload": _bool,
    "trust": _trust,
    "blacklist": _address_list,
    "whitelist": _address_list,
    "result_ttl": _int(1),
    "relay_url": _str_or_none,
    "max_file_size": _int(1),
    "max_files_per_request": _int(1),
    "max_request_mb": _number(0.001),
    "pool_size": _int(1),
    "turn_timeout": _number(0.001),
    "answer_timeout": _number(0.001),
    "shutdown_grace": _number(0),
    "ws_ping_interval": _number(0.01),
    "ws_pong_timeout": _number(0.01),
    "signature_window": _number(1),
    "rate_limit_per_minute": _number(0),
    "rate_limit_burst": _int(1),
    "max_turns_per_identity": _int(0),
    "max_turns_per_ip": _int(0),
    "max_ws_per_ip": _int(0),
    "trusted_proxies": _networks,
    "redis_url": _str_or_none,
    "database_url": _str_or_none,
    "summary": _str_or_none,
    "name": _str_or_none,
    "examples": _str_list,
    "strict_requires_whitelist": _bool,
    "announce_loopback": _bool,
    "allowed_origins": _str_list,
    # Released-host keys we accept and (for now) only validate.
    "permissions": lambda k, v: v,
    "directory": _str_or_none,
}
# host.yaml spells the bind address ``host``; the dataclass calls it ``bind``.
_RENAMES = {"host": "bind"}
_TUPLE_FIELDS = {f.name for f in fields(HostConfig) if str(f.type).startswith("tuple")}


def find_project_dir(start: Path | None = None) -> Path:
    """Walk up to the first folder holding ``.co/`` (stopping at home or a repo root); else cwd."""
    start = (start or Path.cwd()).resolve()
    home = Path.home().resolve()
    for folder in (start, *start.parents):
        if (folder / ".co").is_dir() and folder != home:
            return folder
        if folder == home or (folder / ".git").exists():
            break
    return start


def read_host_yaml(path: Path) -> dict[str, Any]:
    """Parse and validate ``.co/host.yaml``; unknown keys become warnings with a suggestion."""
    if not path.is_file():
        return {}
    import yaml

    if path.stat().st_size > 1 * MB:
        raise ConfigError(f"{path.name}: file is larger than 1 MiB")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name}: not valid YAML ({exc.__class__.__name__})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: must be a mapping of settings")
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in raw.items():
        check = YAML_KEYS.get(key)
        if check is None:
            close = difflib.get_close_matches(str(key), YAML_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            warnings.append(f"{path.name}: unknown key {key!r} ignored{hint}")
            continue
        try:
            checked = check(key, value)
        except ConfigError as exc:
            raise ConfigError(f"{path.name}: {exc}") from None
        if key in ("permissions", "directory"):
            continue
        values[_RENAMES.get(key, key)] = checked
    if warnings:
        values["warnings"] = tuple(warnings)
    return values


def load_env_files(project_dir: Path, environ: dict[str, str]) -> tuple[str, ...]:
    """Load ``<project>/.env`` then ``<AGENT_CONFIG_PATH or ~/.co>/keys.env``; the process env wins."""
    from dotenv import dotenv_values

    loaded = []
    machine = Path(environ.get("AGENT_CONFIG_PATH") or Path.home() / ".co")
    for path in (project_dir / ".env", machine / "keys.env"):
        if path.is_file():
            for key, value in dotenv_values(path).items():
                if value is not None and key not in environ:
                    environ[key] = value
            loaded.append(str(path))
    return tuple(loaded)


def _derive_request_cap(cfg: HostConfig) -> float:
    # Files and images at their limits, base64-inflated, plus 1 MiB of JSON (PROTOCOL D24).
    from hosting.uploads import max_request_bytes

    return max_request_bytes(cfg.max_file_size, cfg.max_files_per_request) / MB


def _secret_key(co_dir: Path, environ: dict[str, str]) -> str:
    """Django's SECRET_KEY: from the environment, else generated once into ``.co/secret_key`` (0600)."""
    if environ.get("DJANGO_SECRET_KEY"):
        return environ["DJANGO_SECRET_KEY"]
    path = co_dir / "secret_key"
    if path.is_file():
        return path.read_text(encoding="ascii").strip()
    co_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(64)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key)
    return key


def load_config(
    args: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None
) -> HostConfig:
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
    if env.get("CONNECTONION_AGENT") and "agent" not in yaml_values:
        values["agent"] = env["CONNECTONION_AGENT"]

    known = {f.name for f in fields(HostConfig)}
    for key, value in args.items():
        if key not in known:
            raise ConfigError(f"unknown option {key!r}")
        if key in ("blacklist", "whitelist") and value is not None and values.get(key):
            # Access lists add up: an argument never drops what host.yaml blocks or admits.
            given = _address_list(key, value)
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
    return replace(
        cfg,
        environment=environment,
        public_domain=env.get("AGENT_PUBLIC_DOMAIN") or None,
        api_key=env.get("OPENONION_API_KEY") or None,
        admin_token=env.get("CONNECTONION_ADMIN_TOKEN") or None,
        secret_key=_secret_key(cfg.co_dir, env),
        machine_dir=Path(env.get("AGENT_CONFIG_PATH") or Path.home() / ".co"),
        loaded_env_files=loaded,
    )


def _validate(cfg: HostConfig) -> None:
    for key in ("port", "workers", "result_ttl", "max_file_size", "max_files_per_request", "pool_size"):
        _int(1)(key, getattr(cfg, key))
    if cfg.port > 65535:
        raise ConfigError(f"port must be at most 65535 (got {cfg.port})")
    if cfg.pool_size > 4096:
        raise ConfigError(f"pool_size must be at most 4096 (got {cfg.pool_size})")
    for key in ("turn_timeout", "answer_timeout", "ws_ping_interval", "ws_pong_timeout"):
        _number(0.001)(key, getattr(cfg, key))
    _number(0)("rate_limit_per_minute", cfg.rate_limit_per_minute)
    _int(1)("rate_limit_burst", cfg.rate_limit_burst)
    for key in ("max_turns_per_identity", "max_turns_per_ip", "max_ws_per_ip"):
        _int(0)(key, getattr(cfg, key))
    _networks("trusted_proxies", list(cfg.trusted_proxies))
    _number(0)("shutdown_grace", cfg.shutdown_grace)
    if ":" not in cfg.agent:
        raise ConfigError(f"agent must be an import path 'module:attribute' (got {cfg.agent!r})")
    if cfg.relay_url is not None and not cfg.relay_url.startswith(("ws://", "wss://")):
        raise ConfigError(f"relay_url must start with ws:// or wss:// (got {cfg.relay_url!r})")
