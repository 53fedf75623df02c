"""The session object that travels with the client: merge rule and the ``chat_items`` rendering list."""

from __future__ import annotations

from typing import Any

SERVER_OWNED = ("requester",)


def _progress(session: dict[str, Any] | None) -> tuple[float, float, float]:
    if not isinstance(session, dict):
        return (0, 0, 0)

    def num(key: str) -> float:
        value = session.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0

    return (num("turn"), num("iteration"), num("updated"))


def merge_sessions(stored: dict[str, Any] | None, client: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
    """PROTOCOL §5.3: the stored copy wins only when strictly newer. Returns ``(session, server_newer)``.

    Server-owned keys (``requester``) always come from the stored copy, never from the client.
    """
    client = dict(client or {})
    if stored is not None and _progress(stored) > _progress(client):
        return dict(stored), True
    for key in SERVER_OWNED:
        client.pop(key, None)
        if stored is not None and key in stored:
            client[key] = stored[key]
    return client, False


def normalize_session(session: dict[str, Any], *, session_id: str, previous_turn: int) -> dict[str, Any]:
    """Make sure the required keys exist and ``turn`` grew by one."""
    out = dict(session)
    out["session_id"] = session_id
    out["messages"] = list(out.get("messages") or [])
    out["trace"] = list(out.get("trace") or [])
    turn = out.get("turn")
    if not isinstance(turn, int) or isinstance(turn, bool) or turn <= previous_turn:
        out["turn"] = previous_turn + 1
    return out


def chat_items(session: dict[str, Any] | None) -> list[dict[str, Any]]:
    """PROTOCOL §5.4: user and agent messages (internal reminders excluded) and finished tools."""
    if not isinstance(session, dict):
        return []
    items: list[dict[str, Any]] = []
    n = 0
    for message in session.get("messages") or []:
        if not isinstance(message, dict) or message.get("internal"):
            continue
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if role == "user" and isinstance(content, str):
            n += 1
            items.append({"id": f"msg-{n}", "type": "user", "content": content})
        elif role == "assistant" and isinstance(content, str) and content:
            n += 1
            items.append({"id": message.get("id") or f"msg-{n}", "type": "agent", "content": content})
    for entry in session.get("trace") or []:
        if isinstance(entry, dict) and entry.get("type") == "tool_result":
            ok = entry.get("status") in ("completed", "success")
            items.append(
                {
                    "id": entry.get("tool_id"),
                    "type": "tool_call",
                    "name": entry.get("name"),
                    "args": entry.get("args"),
                    "status": "done" if ok else "error",
                    "result": entry.get("result"),
                    "timing_ms": entry.get("timing_ms"),
                }
            )
        elif isinstance(entry, dict) and entry.get("type") == "files_received":
            items.append({"type": "files_received", "files": entry.get("files")})
    return items
