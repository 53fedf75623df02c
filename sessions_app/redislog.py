"""The replay log on Redis Streams (``replay_log: redis``, issue 18): resume from any replica.

One stream per session, ``co:events:<agent address>:<session id>``. An event's stream entry id is
``<seq>-0``: its per-session number *is* the id, so

* ``XRANGE key <seq+1>-0 +`` reads exactly the events after a cursor, in order, with no gap and no
  duplicate, on whichever machine the client reconnects to;
* a second append of the same number (a retry after a connection dropped mid-write) is refused by Redis
  ("equal or smaller than the target stream top item") and is counted as already stored: exactly once.

Why Redis Streams and not PostgreSQL: appends are per event (a streaming turn writes dozens a second) and
reads are range scans by a cursor, which is what a stream is; measured in ``bench/replicas.py``. Retention is
``result_ttl``: each write renews the stream's expiry, so a session's events live as long as its result.

Writes are group-committed like the SQLite log's: ``append`` queues the event and returns; one writer thread
per process sends whatever queued up in one pipeline. Until written, an event stays in ``_pending`` and this
process's readers merge it in. A turn's terminal event (``OUTPUT``/``ERROR``) waits for its write, so the
next turn, maybe on another machine, numbers its events after it. While Redis is unreachable the writer keeps
the events and retries (a bounded number is kept); reads fail with ``ServiceUnavailable`` — a clear
``ERROR``/503, never a silently short replay.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from common.errors import ServiceUnavailable
from common.redisclient import sync_client
from sessions_app.eventlog import forget_written

log = logging.getLogger("connectonion")

TERMINAL = ("OUTPUT", "ERROR")
CALL_TIMEOUT = 2.0  # seconds before a Redis call counts as failed
MAX_PENDING = 100_000  # events kept in memory while Redis is down; older ones are dropped past this
RETRY = (0.1, 0.25, 0.5, 1.0, 2.0)
READ_CHUNK = 1000

Row = tuple[str, int, int, str]  # session_id, seq, turn, data (JSON)


class ReplayLogUnavailable(ServiceUnavailable):
    message = "replay log unavailable (Redis is not answering); try again shortly"


class RedisEventLog:
    """The ``EventLog`` interface (append/after/last_seq/turn_of/last_turn/purge/flush) on Redis Streams."""

    kind = "redis"

    def __init__(self, url: str, *, namespace: str, ttl: int) -> None:
        import redis

        self._redis = sync_client(url, timeout=CALL_TIMEOUT)
        self._errors = (redis.RedisError, OSError)
        self._response_error = redis.ResponseError
        self.prefix = f"co:events:{namespace}:"
        self.ttl = max(int(ttl), 1)
        self._cond = threading.Condition()
        self._queue: list[Row] = []
        self._pending: dict[str, list[Row]] = {}
        self._writing = 0
        self._writer: threading.Thread | None = None
        self._down_since: float | None = None

    def _key(self, session_id: str) -> str:
        return self.prefix + session_id

    # -- writing ------------------------------------------------------------------------------------
    def append(self, session_id: str, seq: int, turn: int, event: dict[str, Any]) -> None:
        row = (session_id, seq, turn, json.dumps(event, ensure_ascii=False, default=str))
        with self._cond:
            if len(self._queue) >= MAX_PENDING:
                dropped = self._queue.pop(0)
                rows = self._pending.get(dropped[0], [])
                if rows:
                    rows.pop(0)
                log.error("replay log: Redis down, queue full: dropped event %s of %s", dropped[1], dropped[0])
            self._queue.append(row)
            self._pending.setdefault(session_id, []).append(row)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="redislog-writer", daemon=True)
                self._writer.start()
            self._cond.notify_all()
        if event.get("type") in TERMINAL:  # the next turn (anywhere) numbers after this one
            self._wait_written(session_id, timeout=CALL_TIMEOUT * 2)

    def _wait_written(self, session_id: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending.get(session_id), timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._writing, timeout)

    def _write_loop(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue)
                batch, self._queue = self._queue, []
                self._writing = len(batch)
            try:
                self._store(batch)
            except self._errors as exc:
                with self._cond:  # keep them, in order, ahead of anything queued meanwhile
                    self._queue = batch + self._queue
                    self._writing = 0
                    self._cond.notify_all()
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.error("replay log: Redis unreachable (%s); %d event(s) kept, retrying", exc, len(batch))
                time.sleep(RETRY[min(attempt, len(RETRY) - 1)])
                attempt += 1
                continue
            if self._down_since is not None:
                log.warning("replay log: Redis back after %.1f s", time.monotonic() - self._down_since)
                self._down_since = None
            attempt = 0
            with self._cond:
                forget_written(self._pending, batch)
                self._writing = 0
                self._cond.notify_all()

    def _store(self, batch: list[Row]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        keys = []
        for session_id, seq, turn, data in batch:
            pipe.xadd(self._key(session_id), {"t": turn, "d": data}, id=f"{seq}-0")
            keys.append(self._key(session_id))
        for key in dict.fromkeys(keys):
            pipe.expire(key, self.ttl)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, self._response_error):
                if "equal or smaller" in str(result):
                    continue  # already stored (a retry of a write that had gone through): exactly once
                log.error("replay log: Redis refused a write: %s", result)
            elif isinstance(result, Exception):
                raise result

    # -- reading -------------------------------------------------------------------------------------
    def _unwritten(self, session_id: str) -> list[Row]:
        with self._cond:
            return list(self._pending.get(session_id, ()))

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            log.error("replay log: Redis read failed: %s", exc)
            raise ReplayLogUnavailable() from exc

    def _entries(
        self, session_id: str, start: str, end: str, count: int | None = None, reverse: bool = False
    ) -> list[tuple[int, int, str]]:
        key = self._key(session_id)
        if reverse:
            raw = self._call(self._redis.xrevrange, key, end, start, count=count)
        else:
            raw = self._call(self._redis.xrange, key, start, end, count=count)
        out = []
        for entry_id, fields in raw:
            seq = int(entry_id.split(b"-", 1)[0])
            out.append((seq, int(fields[b"t"]), fields[b"d"].decode("utf-8")))
        return out

    def last_seq(self, session_id: str) -> int:
        pending = self._unwritten(session_id)
        last = self._entries(session_id, "-", "+", count=1, reverse=True)
        return max([last[0][0] if last else 0] + [r[1] for r in pending])

    def after(
        self, session_id: str, seq: int, *, turn: int | None = None, limit: int = 100_000, max_bytes: int = 0
    ) -> list[dict[str, Any]]:
        """Events above ``seq`` (of ``turn``), in order: at most ``limit`` and, with ``max_bytes``, no more
        bytes of JSON than that (but always the first), like ``EventLog.after``."""
        pending = [r for r in self._unwritten(session_id) if r[1] > seq and (turn is None or r[2] == turn)]
        rows: dict[int, str] = {}
        cursor = seq
        while len(rows) < limit:
            chunk = self._entries(session_id, f"{cursor + 1}-0", "+", count=min(READ_CHUNK, limit))
            for number, event_turn, data in chunk:
                cursor = number
                if turn is None or event_turn == turn:
                    rows[number] = data
                elif turn is not None and event_turn > turn:
                    chunk = []  # past the turn: done
                    break
            if len(chunk) < min(READ_CHUNK, limit):
                break
        for r in pending:
            rows[r[1]] = r[3]
        page, total = [], 0
        for _, data in sorted(rows.items())[:limit]:
            total += len(data)
            if page and max_bytes and total > max_bytes:
                break
            page.append(json.loads(data))
        return page

    def turn_of(self, session_id: str, seq: int) -> int | None:
        for r in self._unwritten(session_id):
            if r[1] == seq:
                return r[2]
        found = self._entries(session_id, f"{seq}-0", f"{seq}-0")
        return found[0][1] if found else None

    def last_turn(self, session_id: str) -> int | None:
        pending = self._unwritten(session_id)
        if pending:
            return pending[-1][2]
        last = self._entries(session_id, "-", "+", count=1, reverse=True)
        return last[0][1] if last else None

    def purge(self, *, older_than: float) -> int:
        """Nothing to do: every stream expires ``result_ttl`` after its last event."""
        return 0

    def delete_session(self, session_id: str) -> None:
        self.flush()
        self._call(self._redis.delete, self._key(session_id))
