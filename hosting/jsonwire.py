"""JSON in and out, strictly: one parser for HTTP bodies and WebSocket frames (PROTOCOL D25)."""

from __future__ import annotations

import json
from typing import Any

from hosting.errors import InvalidJSON

MAX_DEPTH = 64


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidJSON(f"Invalid JSON: duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InvalidJSON(f"Invalid JSON: {name} is not allowed")


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Container depth of a parsed value, walked iteratively (cost ~ number of containers)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads_object(raw: str | bytes, *, what: str = "request body", detailed: bool = True) -> dict[str, Any]:
    """Parse one JSON object or raise ``InvalidJSON`` naming the problem. Never raises anything else.

    ``detailed=False`` (HTTP) answers plain syntax problems with exactly ``Invalid JSON`` (PROTOCOL §3.1);
    duplicate keys and excessive nesting always say so.
    """
    try:
        return _loads_object(raw, what=what)
    except InvalidJSON as exc:
        if detailed or exc.message.startswith(("Invalid JSON: duplicate", "Invalid JSON: nesting")) or not exc.message.startswith("Invalid JSON"):
            raise
        raise InvalidJSON() from None


def _loads_object(raw: str | bytes, *, what: str) -> dict[str, Any]:
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON("Invalid JSON: not UTF-8") from None
    else:
        text = raw
    if text.startswith("\ufeff"):
        raise InvalidJSON("Invalid JSON: byte order mark not allowed")
    if not text.strip():
        raise InvalidJSON("Invalid JSON: empty")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except InvalidJSON:
        raise
    except RecursionError:
        raise InvalidJSON(f"Invalid JSON: nesting deeper than {MAX_DEPTH}") from None
    except ValueError as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.__class__.__name__
        raise InvalidJSON(f"Invalid JSON: {detail}") from None
    if not isinstance(value, dict):
        raise InvalidJSON(f"{what} must be a JSON object")
    if _too_deep(value):
        raise InvalidJSON(f"Invalid JSON: nesting deeper than {MAX_DEPTH}")
    return value


def dumps(value: Any) -> str:
    """Compact JSON with literal non-ASCII (PROTOCOL §4.1)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
