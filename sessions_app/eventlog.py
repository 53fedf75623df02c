"""Numbered turn events, kept for replay on resume (PROTOCOL §4.9).

A small SQLite file under ``.co/`` shared by every worker on the machine. Each session's events are
numbered from 1 upwards; the number travels as the event's string ``id`` and is the resume cursor.
Writes come from agent threads (never the event loop); each thread has its own connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    turn INTEGER NOT NULL,
    created REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_created ON events (created);
"""


class EventLog:
    """Append and read numbered events. Thread-safe (a connection per thread)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def last_seq(self, session_id: str) -> int:
        row = self._db().execute("SELECT MAX(seq) FROM events WHERE session_id = ?", (session_id,)).fetchone()
        return int(row[0] or 0)

    def append(self, session_id: str, seq: int, turn: int, event: dict[str, Any]) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO events (session_id, seq, turn, created, data) VALUES (?, ?, ?, ?, ?)",
            (session_id, seq, turn, time.time(), json.dumps(event, ensure_ascii=False, default=str)),
        )

    def after(self, session_id: str, seq: int, *, turn: int | None = None, limit: int = 100_000) -> list[dict[str, Any]]:
        """Events with a number above ``seq`` (of one turn when given), in order."""
        if turn is None:
            rows = self._db().execute(
                "SELECT data FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (session_id, seq, limit),
            )
        else:
            rows = self._db().execute(
                "SELECT data FROM events WHERE session_id = ? AND seq > ? AND turn = ? ORDER BY seq LIMIT ?",
                (session_id, seq, turn, limit),
            )
        return [json.loads(r[0]) for r in rows]

    def turn_of(self, session_id: str, seq: int) -> int | None:
        row = self._db().execute(
            "SELECT turn FROM events WHERE session_id = ? AND seq = ?", (session_id, seq)
        ).fetchone()
        return int(row[0]) if row else None

    def last_turn(self, session_id: str) -> int | None:
        row = self._db().execute(
            "SELECT turn FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1", (session_id,)
        ).fetchone()
        return int(row[0]) if row else None

    def purge(self, *, older_than: float) -> int:
        """Drop events created before ``older_than`` (called by the store's compaction)."""
        return self._db().execute("DELETE FROM events WHERE created < ?", (older_than,)).rowcount

    def delete_session(self, session_id: str) -> None:
        self._db().execute("DELETE FROM events WHERE session_id = ?", (session_id,))
