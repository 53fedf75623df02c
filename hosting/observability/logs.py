"""JSON log lines for log shippers (``log_format: json``): one object per line, with the session, trace and
span ids of the turn whose agent thread wrote it, so a line joins its session record and its trace."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

_bound = threading.local()


def bind(**ids: str | None) -> None:
    """Name the turn this thread works for (``session_id``, ``trace_id``, ``span_id``); ``clear()`` after."""
    _bound.ids = {k: v for k, v in ids.items() if v}


def clear() -> None:
    _bound.ids = None


def current_ids() -> dict[str, str]:
    return dict(getattr(_bound, "ids", None) or {})


def turn_ids(**ids: str | None) -> dict[str, dict[str, str]]:
    """``extra=`` for a line about a turn written off its agent thread (on the event loop, which many turns
    share, so nothing can be bound there): ``activity.info(..., extra=turn_ids(session_id=..., trace_id=...))``."""
    return {"turn_ids": {k: v for k, v in ids.items() if v}}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "session_id"?, "trace_id"?, "span_id"?, "exception"?}``.

    JSON escaping keeps a prompt's newlines inside its line (HARDENING H15 holds for these lines too)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **current_ids(),
            **(getattr(record, "turn_ids", None) or {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
