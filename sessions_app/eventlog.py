"""Numbered turn events, kept for replay on resume (PROTOCOL §4.9).

A small SQLite file under ``.co/`` shared by every worker on the machine. Each session's events are
numbered from 1 upwards; the number travels as the event's string ``id`` and is the resume cursor.

Writes are group-committed: ``append`` (from an agent thread) queues the row and returns; one writer thread
per process stores whatever has queued up in a single transaction, so a busy host pays one commit per batch
instead of one per event. A turn's terminal event waits for its commit, so a turn is in the log before its
answer is sent (that row is shown once committed). Until its batch is committed a row stays in
``_pending``, and every reader in this process merges it in, so the process never sees a gap; other workers see it once committed
(typically within a millisecond; their viewers poll or get it live through the bridge). Readers take the
pending snapshot before they query, so a row committed in between is found twice and never zero times.
"""

from __future__ import annotations

import atexit
import json
import logging
import sqlite3
import threading
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

from common import metrics

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


log = logging.getLogger("connectonion")

_INSERT = "INSERT OR REPLACE INTO events (session_id, seq, turn, created, data) VALUES (?, ?, ?, ?, ?)"
_WRITE_ATTEMPTS = 5
TERMINAL = ("OUTPUT", "ERROR")  # a turn's last event: committed before the answer is sent
TERMINAL_WAIT = 5.0  # seconds a terminal event waits for its commit at most
LINGER = 0.002  # the writer thread's pause before a batch: lets a turn's terminal event take it whole

Row = tuple[str, int, int, float, str]  # session_id, seq, turn, created, data (JSON)


def forget_written(pending: dict[str, list[Any]], batch: list[Any]) -> None:
    """Drop a written batch from the pending rows: each session's oldest pending rows are the ones written."""
    for session_id, count in Counter(row[0] for row in batch).items():
        rows = pending.get(session_id, [])
        del rows[:count]
        if not rows:
            pending.pop(session_id, None)


class EventLog:
    """Append and read numbered events. Thread-safe (a connection per thread, one writer thread)."""

    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(_SCHEMA)
        self._cond = threading.Condition()
        self._queue: list[Row] = []
        self._pending: dict[str, list[Row]] = {}  # queued or being written, per session, in order
        self._unlisted: dict[int, Row] = {}  # terminal rows queued or being written: not shown before committed
        self._writing = 0
        self._writer: threading.Thread | None = None
        _open_logs.add(self)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    # -- writing ------------------------------------------------------------------------------------
    def append(self, session_id: str, seq: int, turn: int, event: dict[str, Any]) -> None:
        """Queue the event; a turn's terminal event (``OUTPUT``/``ERROR``) returns only once it is committed,
        so every event of a turn is stored before its answer leaves (issue 20). Until then the terminal row
        is not among the pending rows readers merge in: it becomes visible when it is durable, just before
        the caller publishes it live, as quickly after that as before."""
        row = (session_id, seq, turn, time.time(), json.dumps(event, ensure_ascii=False, default=str))
        terminal = event.get("type") in TERMINAL
        with self._cond:
            first = not self._queue
            self._queue.append(row)
            if terminal:
                self._unlisted[id(row)] = row
            else:
                self._pending.setdefault(session_id, []).append(row)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="eventlog-writer", daemon=True)
                self._writer.start()
            if not terminal:
                if first:  # the writer thread waits for a queue to form; later rows would only wake it again
                    self._cond.notify_all()
                return
        self._commit_through(row)

    def _commit_through(self, row: Row) -> None:
        """Return once ``row`` is committed: this thread commits the queue itself when no batch is being
        written (leader, once), else waits for that batch. Bounded: a log another process keeps locked
        delays the row (the writer thread retries it, readers merge it in meanwhile), not the answer."""
        deadline = time.monotonic() + TERMINAL_WAIT
        led = False
        while True:
            with self._cond:
                if id(row) not in self._unlisted:
                    return
                if led or self._writing or not self._queue:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        del self._unlisted[id(row)]  # pending like any other row until the writer stores it
                        self._pending.setdefault(row[0], []).append(row)
                        log.error(
                            "replay log: the end of %s is not committed after %.0f s; answering anyway",
                            row[0],
                            TERMINAL_WAIT,
                        )
                        return
                    self._cond.wait(remaining)
                    continue
                batch, self._queue = self._queue, []
                self._writing = len(batch)
            led = True
            self._written(batch, self._store(batch, attempts=1))

    def _written(self, batch: list[Row], stored: bool) -> None:
        with self._cond:
            if stored:
                listed = [r for r in batch if self._unlisted.pop(id(r), None) is None]
                forget_written(self._pending, listed)
            else:  # kept, in order, ahead of anything queued meanwhile, for the writer thread to retry
                self._queue = batch + self._queue
            self._writing = 0
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every appended event is committed (shutdown, maintenance); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._writing, timeout)

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue and not self._writing)
            time.sleep(LINGER)  # a short turn's terminal event usually arrives meanwhile and commits it all
            with self._cond:
                if not self._queue or self._writing:
                    continue
                batch, self._queue = self._queue, []
                self._writing = len(batch)
            self._written(batch, self._store(batch))

    def _store(self, batch: list[Row], attempts: int = _WRITE_ATTEMPTS) -> bool:
        """Commit ``batch`` in one transaction; False when it could not be (logged; the writer thread keeps
        going). A terminal event's own thread tries once, then leaves the batch to the writer thread."""
        for attempt in range(attempts):
            try:
                began = time.perf_counter()
                db = self._db()
                if attempts == 1 and not getattr(self._local, "leads", False):
                    # a turn's own thread waits TERMINAL_WAIT at most for another process's lock, not 30 s
                    db.execute(f"PRAGMA busy_timeout = {int(TERMINAL_WAIT * 1000)}")
                    self._local.leads = True
                with db:  # one transaction for the batch
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany(_INSERT, batch)
                metrics.replay_write(time.perf_counter() - began)
                return True
            except Exception as exc:  # noqa: BLE001 - the writer thread must outlive any failure (disk full, locked, ...)
                if attempts == 1 and isinstance(exc, sqlite3.Error):
                    return False
                if attempt == attempts - 1 or not isinstance(exc, sqlite3.Error):
                    log.error("replay log: %d events not stored: %s", len(batch), exc)
                    return True  # dropped, as before: never retried for ever
                time.sleep(0.05 * 2**attempt)
        return True

    # -- reading -------------------------------------------------------------------------------------
    def _unwritten(self, session_id: str) -> list[Row]:
        with self._cond:
            return list(self._pending.get(session_id, ()))

    def last_seq(self, session_id: str) -> int:
        pending = self._unwritten(session_id)
        row = self._db().execute("SELECT MAX(seq) FROM events WHERE session_id = ?", (session_id,)).fetchone()
        return max([int(row[0] or 0)] + [r[1] for r in pending])

    def after(
        self, session_id: str, seq: int, *, turn: int | None = None, limit: int = 100_000, max_bytes: int = 0
    ) -> list[dict[str, Any]]:
        """Events with a number above ``seq`` (of one turn when given), in order: at most ``limit`` of them and,
        when ``max_bytes`` is set, no more than that many bytes of JSON (but always the first one)."""
        pending = [r for r in self._unwritten(session_id) if r[1] > seq and (turn is None or r[2] == turn)]
        if turn is None:
            cursor = self._db().execute(
                "SELECT seq, data FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (session_id, seq, limit),
            )
        else:
            cursor = self._db().execute(
                "SELECT seq, data FROM events WHERE session_id = ? AND seq > ? AND turn = ? ORDER BY seq LIMIT ?",
                (session_id, seq, turn, limit),
            )
        rows, cut = _within(cursor, max_bytes)
        if cut:  # stored events past the page exist: unwritten ones after them belong to a later page
            pending = [r for r in pending if r[1] <= rows[-1][0]]
        if pending:
            merged = dict(rows)
            merged.update((r[1], r[4]) for r in pending)
            rows, _cut = _within(sorted(merged.items())[:limit], max_bytes)
        return [json.loads(data) for _, data in rows]

    def turn_of(self, session_id: str, seq: int) -> int | None:
        for r in self._unwritten(session_id):
            if r[1] == seq:
                return r[2]
        row = (
            self._db().execute("SELECT turn FROM events WHERE session_id = ? AND seq = ?", (session_id, seq)).fetchone()
        )
        return int(row[0]) if row else None

    def last_turn(self, session_id: str) -> int | None:
        pending = self._unwritten(session_id)
        if pending:
            return pending[-1][2]
        row = (
            self._db()
            .execute("SELECT turn FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1", (session_id,))
            .fetchone()
        )
        return int(row[0]) if row else None

    def purge(self, *, older_than: float) -> int:
        """Drop events created before ``older_than`` (called by the store's compaction)."""
        self.flush()
        return self._db().execute("DELETE FROM events WHERE created < ?", (older_than,)).rowcount

    def delete_session(self, session_id: str) -> None:
        self.flush()
        self._db().execute("DELETE FROM events WHERE session_id = ?", (session_id,))


_open_logs: weakref.WeakSet[EventLog] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """A clean exit (SIGTERM, end of tests) stores what is still queued."""
    for eventlog in list(_open_logs):
        eventlog.flush(timeout=5.0)


def _within(rows: Any, max_bytes: int) -> tuple[list[tuple[int, str]], bool]:
    """The leading rows whose data fit in ``max_bytes`` (0: all), at least one: a page a reader can hold.
    Also whether rows were left out."""
    if not max_bytes:
        return list(rows), False
    kept: list[tuple[int, str]] = []
    total = 0
    for row in rows:
        total += len(row[1])
        if kept and total > max_bytes:
            return kept, True
        kept.append(row)
    return kept, False
