"""``.co/host.yaml``: the keys it may set, the check of each value, and the reading of the file.

Pure validation (no environment, no Django): ``hosting.core.config`` layers the result between the defaults and
the arguments. Every refusal is a ``ConfigError`` naming the file, the key and a bounded form of the value.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import reprlib
from pathlib import Path
from typing import Any

from common.errors import ConfigError

MB = 1024 * 1024
# host.yaml spells the bind address ``host``; the dataclass calls it ``bind``.
_RENAMES = {"host": "bind"}


def shown(value: Any) -> str:
    """A bounded repr for error lines: an alias bomb or a huge list never expands (HARDENING F6)."""
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


# Options a host.yaml may set, with the type checker used for each.
def integer(minimum: int = 0):
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer (got {shown(value)})")
        if value < minimum:
            raise ConfigError(f"{key} must be at least {minimum} (got {shown(value)})")
        return value

    return check


def number(minimum: float = 0.0):
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key} must be a number (got {shown(value)})")
        if value < minimum:
            raise ConfigError(f"{key} must be at least {minimum} (got {shown(value)})")
        return float(value)

    return check


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false (got {shown(value)})")
    return value


def _str_or_none(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string (got {shown(value)})")
    return value


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string (got {shown(value)})")
    return value


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a list of strings (got {shown(value)})")
    return tuple(value)


def address_list(key: str, value: Any) -> tuple[str, ...]:
    """Like ``_str_list``, but an unquoted ``0x...`` address that YAML read as an integer is restored."""
    if isinstance(value, list | tuple):
        value = [
            f"0x{v:064x}" if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**256 else v for v in value
        ]
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**256:
        value = f"0x{value:064x}"
    return _str_list(key, value)


def networks(key: str, value: Any) -> tuple[str, ...]:
    """IP addresses or CIDR networks (``trusted_proxies``)."""
    values = _str_list(key, value)
    for item in values:
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"{key} must list IP addresses or networks (got {shown(item)})") from None
    return values


def _trust(key: str, value: Any) -> str:
    if isinstance(value, dict):
        # A mapping policy (PROTOCOL §7.1 form 4) is kept as YAML front matter text.
        import yaml

        return "---\n" + yaml.safe_dump(value, sort_keys=False) + "---\n"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a trust level, a policy text or a policy file (got {shown(value)})")
    return value


def log_format_value(key: str, value: Any) -> str:
    if value not in ("text", "json"):
        raise ConfigError(f"{key} must be text or json (got {shown(value)})")
    return value


YAML_KEYS: dict[str, Any] = {
    "agent": _str,
    "host": _str,
    "port": integer(1),
    "workers": integer(1),
    "reload": _bool,
    "trust": _trust,
    "blacklist": address_list,
    "whitelist": address_list,
    "result_ttl": integer(1),
    "relay_url": _str_or_none,
    "max_file_size": integer(1),
    "max_files_per_request": integer(1),
    "max_request_mb": number(0.001),
    "pool_size": integer(1),
    "turn_timeout": number(0.001),
    "answer_timeout": number(0.001),
    "shutdown_grace": number(0),
    "ws_ping_interval": number(0.01),
    "ws_pong_timeout": number(0.01),
    "signature_window": number(1),
    "rate_limit_per_minute": number(0),
    "rate_limit_burst": integer(1),
    "max_turns_per_identity": integer(0),
    "max_turns_per_ip": integer(0),
    "max_ws_per_ip": integer(0),
    "header_timeout": number(0),
    "body_timeout": number(0),
    "max_connections_per_ip": integer(0),
    "bodies_in_flight_mb": number(0),
    "ws_send_buffer_mb": number(0),
    "ws_max_frames_per_second": number(0),
    "trusted_proxies": networks,
    "redis_url": _str_or_none,
    "database_url": _str_or_none,
    "store": _str,
    "replay_log": _str,
    "lease_seconds": number(1),
    "summary": _str_or_none,
    "name": _str_or_none,
    "examples": _str_list,
    "strict_requires_whitelist": _bool,
    "announce_loopback": _bool,
    "allowed_origins": _str_list,
    "metrics": _bool,
    "tracing": _bool,
    "otlp_endpoint": _str_or_none,
    "trace_content": _bool,
    "log_format": log_format_value,
    # Released-host keys we accept and (for now) only validate.
    "permissions": lambda k, v: v,
    "directory": _str_or_none,
}


def read_host_yaml(path: Path) -> dict[str, Any]:
    """Parse and validate ``.co/host.yaml``; unknown keys become warnings with a suggestion."""
    if not path.is_file():
        return {}
    import yaml

    if path.stat().st_size > 1 * MB:
        raise ConfigError(f"{path.name}: file is larger than 1 MiB")
    from common import safeyaml

    try:
        raw = safeyaml.load(path.read_text(encoding="utf-8"))
    except safeyaml.AliasRefused as exc:
        raise ConfigError(f"{path.name}: {exc}") from None
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
