"""JSON in and out, strictly: one parser for HTTP bodies and WebSocket frames (PROTOCOL D25)."""

from __future__ import annotations

import json
import re
from typing import Any

from common.errors import InvalidJSON

MAX_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidJSON(f"Invalid JSON: duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InvalidJSON(f"Invalid JSON: {name} is not allowed")


def _inspect(value: Any, limit: int = MAX_DEPTH) -> tuple[bool, bool]:
    """``(nested deeper than limit, holds a string or key with a lone surrogate)``, in one iterative walk (cost
    ~ number of values; an ASCII string is known clean at once)."""
    unclean = False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            unclean = unclean or not all(map(_clean, node))
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True, unclean
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif not unclean and isinstance(child, str) and not _clean(child):
                unclean = True
    return False, unclean


def loads_object(raw: str | bytes, *, what: str = "request body", detailed: bool = True) -> dict[str, Any]:
    """Parse one JSON object or raise ``InvalidJSON`` naming the problem. Never raises anything else.

    ``detailed=False`` (HTTP) answers plain syntax problems with exactly ``Invalid JSON`` (PROTOCOL §3.1);
    duplicate keys and excessive nesting always say so.
    """
    try:
        return _loads_object(raw, what=what)
    except InvalidJSON as exc:
        if (
            detailed
            or exc.message.startswith(("Invalid JSON: duplicate", "Invalid JSON: nesting"))
            or not exc.message.startswith("Invalid JSON")
        ):
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
    too_deep, unclean = _inspect(value)
    if too_deep:
        raise InvalidJSON(f"Invalid JSON: nesting deeper than {MAX_DEPTH}")
    if unclean:
        raise InvalidJSON(f"{_lone_surrogate(value)} is not valid Unicode")
    return value


def _lone_surrogate(value: dict[str, Any]) -> str | None:
    """Where a string (or key) holding a lone surrogate sits, as ``session.messages[0].content``; ``None`` if
    there is none. Such a string has no UTF-8 form: refused here, for every field of every frame
    and body at every door, it never reaches the agent, the store, the replay log or a socket's send."""
    stack: list[tuple[str, Any]] = [(key, child) for key, child in value.items() if _clean(key)]
    if len(stack) < len(value):
        return "a key"
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if not _clean(node):
                return path[:200]
        elif isinstance(node, dict):
            for key, child in node.items():
                if not _clean(key):
                    return f"{path[:200]} key"
                stack.append((f"{path}.{key}", child))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(node))
    return None


def _clean(text: str) -> bool:
    return text.isascii() or _SURROGATE.search(text) is None


def encodable(text: str) -> bool:
    """Whether ``text`` has a UTF-8 form (no lone surrogate), without encoding it."""
    return _clean(text)


def frame_too_large(limit: int) -> InvalidJSON:
    """The ERROR for a frame over the message cap (D24): a 400-class error, the socket stays open."""
    return InvalidJSON(f"message too large (max {limit} bytes)")


def decode_frame(text: str, *, limit: int) -> dict[str, Any]:
    """One WebSocket or relayed text frame as a JSON object: the size is counted before parsing (D24),
    then the strict parser above (D25). Every door's frames come through here: ``/ws``, the relay link
    and our relay server. Raises ``InvalidJSON`` naming the problem, never anything else."""
    if len(text) > limit:
        raise frame_too_large(limit)
    return loads_object(text, what="message")


def dumps(value: Any) -> str:
    """Compact JSON with literal non-ASCII (PROTOCOL §4.1)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
