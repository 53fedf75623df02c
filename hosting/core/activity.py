"""The agent's activity log (``.co/logs/<agent name>.log``) and per-session history (``.co/sessions/*.yaml``).

``configure()`` is called once per process when the runtime is built (never at import time). One line per
event; control characters are escaped and known secrets redacted, so neither a prompt nor a mistake can
forge a line or leak a key into the file that ``/admin/logs`` serves.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import yaml

LOGGERS = ("connectonion.activity", "connectonion.trust")
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5

activity = logging.getLogger("connectonion.activity")
_lock = threading.Lock()
_handler: ActivityFileHandler | None = None
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def safe_name(name: str) -> str:
    """The agent name as a file name (no separators, no dot files)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name or "agent").strip("._") or "agent"
    return cleaned[:100]


def log_path(logs_dir: Path, agent_name: str) -> Path:
    return logs_dir / f"{safe_name(agent_name)}.log"


def escape(text: str) -> str:
    """Control characters (newlines included) as visible escapes: one event stays one line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class ActivityFormatter(logging.Formatter):
    """``<time> [<agent>] <message>``, one line, secrets replaced by ``[redacted]``."""

    def __init__(self, agent: str, secrets: Iterable[str]) -> None:
        super().__init__()
        self.agent = escape(agent)
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message} | {self.formatException(record.exc_info)}"
        for secret in self.secrets:
            message = message.replace(secret, "[redacted]")
        message = escape(message)
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        prefix = f"[{self.agent}]"
        if message.startswith(prefix):
            return f"{stamp} {message}"
        kind = record.name.rsplit(".", 1)[-1]
        return f"{stamp} {prefix} {kind}: {message}"


class ActivityFileHandler(RotatingFileHandler):
    """Rotates on the size the file has reached: the stock check formats every record twice and stats the
    path twice per line, which showed on a busy host's profile."""

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.maxBytes <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        return self.stream.tell() >= self.maxBytes


def configure(logs_dir: Path, agent_name: str, *, secrets: Iterable[str] = ()) -> Path:
    """Send the activity and trust loggers to the agent's rotating log file. Idempotent per path."""
    global _handler
    path = log_path(logs_dir, agent_name)
    with _lock:
        if _handler is not None and Path(_handler.baseFilename) == path.resolve():
            return path
        logs_dir.mkdir(parents=True, exist_ok=True)
        handler = ActivityFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8", delay=True)
        handler.setFormatter(ActivityFormatter(agent_name, secrets))
        handler.setLevel(logging.INFO)
        for name in LOGGERS:
            logger = logging.getLogger(name)
            if _handler is not None:
                logger.removeHandler(_handler)
            logger.addHandler(handler)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
        if _handler is not None:
            _handler.close()
        _handler = handler
    return path


def ensure_attached() -> None:
    """Re-attach the file handler if a later ``logging.config.dictConfig`` (a second ``django.setup()``,
    e.g. importing the ASGI module after the runtime was built) reset the loggers' handlers."""
    handler = _handler
    if handler is None:
        return
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if handler not in logger.handlers:
            with _lock:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
                    if logger.getEffectiveLevel() > logging.INFO:
                        logger.setLevel(logging.INFO)


def log_event(agent_name: str, session_id: str, event: dict[str, Any]) -> None:
    """The events worth a line of their own (today: a finished tool call with its duration)."""
    if event.get("type") != "tool_result":
        return
    result = str(event.get("result", ""))
    activity.info(
        "[%s] tool %s %s: %s (%s ms) -> %s",
        agent_name,
        session_id[:8],
        event.get("name"),
        event.get("status", "completed"),
        event.get("timing_ms"),
        result[:200],
    )


# -- session history ---------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def write_session_yaml(
    sessions_dir: Path, *, name: str, session_id: str, session: dict[str, Any], created: float | None = None
) -> Path:
    """Write ``<session_id>.yaml`` with the whole conversation; atomic (temp file + rename).

    ``created`` is the session's first turn (from the result store), so nothing is read back.
    Image data is replaced by a marker: the file is a readable history, not an archive of uploads.
    """
    path = sessions_dir / f"{safe_name(session_id)}.yaml"
    now = _iso(time.time())
    created = _iso(created) if created else None
    turns = [
        {"role": str(m.get("role")), "content": _plain(_without_images(m.get("content")))}
        for m in session.get("messages") or []
        if isinstance(m, dict) and not m.get("internal") and m.get("role") in ("user", "assistant", "tool")
    ]
    document = {
        "name": name,
        "session_id": session_id,
        "created": str(created) if created else now,
        "updated": now,
        "total_cost": float(_number(session.get("total_cost"))),
        "total_tokens": int(_number(session.get("total_tokens"))),
        "turns": turns,
    }
    text = _plain_history(document)
    if text is None:
        text = yaml.dump(document, Dumper=_DUMPER, allow_unicode=True, sort_keys=False)
    data = text.encode("utf-8")
    # One temp name per writing thread (no other thread or process can hold it): no random name to make.
    tmp = sessions_dir / f".tmp-{os.getpid()}-{threading.get_ident()}.yaml"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:  # the first write (or the folder was removed): make it, once, not every turn
        sessions_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when available: 10x faster
# What a YAML double-quoted scalar must not hold raw (JSON's string escapes cover C0, '"' and '\\'): C1 and DEL
# (not printable for YAML), the line and paragraph separators (folded like a newline), BOM and non-characters.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def _quoted(text: str) -> str:
    """A string as a YAML double-quoted scalar: JSON's escapes are YAML's, plus ``\\uXXXX`` for ``_YAML_UNSAFE``."""
    quoted = json.dumps(text, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted) if _YAML_UNSAFE.search(quoted) else quoted


def _plain_history(document: dict[str, Any]) -> str | None:
    """The history document as YAML text written directly, for what nearly every history holds (strings, a
    finite cost, text turns): a tenth of libyaml's cost per turn (issue 20). None for anything else (a
    multimodal turn, a cost like ``1e-05``): ``yaml.dump`` writes those. Either loads to the same document."""
    cost = repr(document["total_cost"])
    if "e" in cost or "n" in cost:  # (1e-05, inf, nan: libyaml's spelling)
        return None
    lines = [f"{key}: {_quoted(document[key])}" for key in ("name", "session_id", "created", "updated")]
    lines += [f"total_cost: {cost}", f"total_tokens: {document['total_tokens']}"]
    turns = document["turns"]
    if not all(isinstance(t["content"], str) for t in turns):
        return None
    lines.append("turns:" if turns else "turns: []")
    for turn in turns:
        lines += [f"- role: {_quoted(turn['role'])}", f"  content: {_quoted(turn['content'])}"]
    return "\n".join(lines) + "\n"


def _without_images(content: Any) -> Any:
    if isinstance(content, list):
        return [
            {"type": "image_url", "image_url": "[image]"} if isinstance(p, dict) and p.get("type") == "image_url" else p
            for p in content
        ]
    return content


def _number(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _plain(value: Any) -> Any:
    """JSON-shaped data only (what ``safe_dump`` can always write)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)
