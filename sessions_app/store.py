"""Session results in ``.co/session_results.jsonl``, behind a small Django-style interface.

The file is append-only, one JSON object per line, and the last line for a ``session_id`` wins
(PROTOCOL §5.2). Readers keep an in-memory index and only read the file's new tail when another
process appended, so a lookup costs the same with a million records as with a thousand.
Writers take an exclusive ``flock`` and append whole lines with a single ``write``: one record, or every
record the process's threads queued meanwhile (group commit, ``sessions_app.groupcommit``), each caller
returning once its own line is in the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from common import metrics
from common.errors import StorageUnavailable
from sessions_app.groupcommit import GroupCommit
from sessions_app.jsonl import (
    FileLock,
    append_lines,
    decode_data,
    encode,
    fsync_dir,
    line_at,
    opened,
)
from sessions_app.liveness import Liveness
from sessions_app.records import LIVE_STATUSES, RUNNING, DoesNotExist, QuerySet, SessionRecord

log = logging.getLogger("connectonion.store")

COMPACT_EVERY = 3600.0


class SessionStore:
    """The JSONL store. Thread-safe within a process; safe across processes through ``flock``."""

    kind = "jsonl"

    def __init__(self, path: Path, *, result_ttl: int = 86400, liveness: Liveness | None = None) -> None:
        self.path = Path(path)
        self.result_ttl = result_ttl
        self.liveness = liveness  # whose token goes on running records, and who is alive (D30)
        self._lock = threading.RLock()  # the index (readers and the writer's update of it)
        self._write = threading.RLock()  # writes: the group-commit leader, the sweep, compaction (then flock, _lock)
        self._index: dict[str, SessionRecord] = {}
        self._live: set[str] = set()  # ids whose latest record is running/waiting (what the sweeper checks)
        self._ordered: list[SessionRecord] | None = None
        self._offset = 0
        self._inode: int | None = None
        self._skipped = 0
        self._last_compaction = 0.0
        self._parked: dict[str, dict[str, Any]] = {}  # terminal records not written yet (see update)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._flock_depth = 0
        self._commits = GroupCommit(self._write_lines, lock=self._write)

    # -- the Django-style surface ----------------------------------------------------------------------
    def all(self) -> QuerySet:
        return QuerySet(self)

    def filter(self, **lookups: Any) -> QuerySet:
        return QuerySet(self).filter(**lookups)

    def get(self, session_id: str, *, include_expired: bool = False) -> SessionRecord:
        """The latest record for ``session_id``; raises ``DoesNotExist`` when absent or expired."""
        with self._lock:
            self._refresh()
            record = self._index.get(session_id)
        if record is None or (not include_expired and not record.visible(time.time())):
            raise DoesNotExist(session_id)
        return record

    def create(self, *, session_id: str, prompt: str, owner: str | None = None, **fields: Any) -> SessionRecord:
        """Append the ``running`` record of a new turn. ``created`` is kept across turns."""
        now = time.time()
        previous = self._current(session_id)
        data: dict[str, Any] = {
            "session_id": session_id,
            "prompt": prompt,
            "status": RUNNING,
            "created": int(previous.created) if previous else int(now),
            "expires": int(now + self.result_ttl),
            "owner": owner,
            "worker": self.liveness.token if self.liveness is not None else None,
            "updated_at": now,
        }
        data.update(fields)
        return self._append(data)

    def update(self, session_id: str, **fields: Any) -> SessionRecord:
        """Append a new version of the record with ``fields`` changed (e.g. status ``done``)."""
        current = self._current(session_id)
        if current is None:
            raise DoesNotExist(session_id)
        data = dict(current.data)
        data.update(fields)
        data["updated_at"] = time.time()
        if data.get("status") in LIVE_STATUSES:
            return self._append(data)
        for key in ("worker", "pid", "host"):  # (pid/host: records of versions before worker tokens)
            data.pop(key, None)
        try:
            return self._append(data)
        except StorageUnavailable:
            # The end of a turn could not be written (disk full, read-only): this process answers with it
            # and writes it ahead of its next line, so the session is not left `running` (busy) for good.
            with self._lock:
                self._parked[session_id] = data
                self._put(SessionRecord(data))
                self._ordered = None
            raise

    # -- maintenance ---------------------------------------------------------------------------------
    def recover_interrupted(self) -> int:
        """Mark the turns of dead workers ``interrupted`` (PROTOCOL §5.5, D30); returns how many this call marked.

        Run at start-up and by every serving process's sweeper (``liveness.Sweeper``). A worker is dead when
        ``liveness.alive(token)`` says so; a record without a token (older versions) is never alive. Each
        write re-checks, under the file lock, that the record is still that worker's live record, so a turn
        that ended meanwhile is left as it ended, and two sweepers noticing at once mark it once.
        """
        alive = self.liveness.alive if self.liveness is not None else (lambda token: False)
        with self._lock:
            self._refresh()
            live = [self._index[sid] for sid in self._live]
        verdicts: dict[str | None, bool] = {}
        stale = []
        for record in live:
            if record.worker not in verdicts:
                verdicts[record.worker] = alive(record.worker)
            if not verdicts[record.worker]:
                stale.append(record)
        marked = sum(1 for record in stale if self._interrupt(record))
        if marked:
            log.warning("marked %d turn(s) of stopped workers as interrupted", marked)
        return marked

    def _interrupt(self, seen: SessionRecord) -> bool:
        """Append ``interrupted`` for ``seen`` if it is still the latest record of its id (under the flock)."""
        try:
            with self._write, self._flocked(), self._lock:
                self._refresh(locked=True)
                current = self._index.get(seen.session_id)
                if current is None or current.status not in LIVE_STATUSES or current.worker != seen.worker:
                    return False
                data = dict(current.data)
                for key in ("worker", "pid", "host"):
                    data.pop(key, None)
                now = time.time()  # a fresh expiry, so clients can still learn what happened
                data.update(
                    status="interrupted", error="interrupted", updated_at=now, expires=int(now + self.result_ttl)
                )
                self._append(data)
                return True
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)
            raise StorageUnavailable() from exc

    def compact(self, *, now: float | None = None, on_expired: Callable[[SessionRecord], None] | None = None) -> int:
        """Rewrite the file keeping the newest visible record per id; returns records dropped.

        Temp file + fsync + rename under the lock, so readers see either the old or the new file.
        """
        now = time.time() if now is None else now
        with self._write, self._flocked(), self._lock:
            self._refresh(locked=True)
            keep = [r for r in self._index.values() if r.visible(now)]
            dropped = [r for r in self._index.values() if not r.visible(now)]
            tmp = self.path.with_name(self.path.name + f".compact-{os.getpid()}")
            index: dict[str, SessionRecord] = {}
            with open(tmp, "wb") as fh, opened(self.path) as source:
                inode = os.fstat(fh.fileno()).st_ino
                # in the order they were written (file order), records never written (parked) last
                for record in sorted(keep, key=lambda r: (r.where is None, r.where or (0, 0, 0))):
                    # the stored bytes as they are (no decode, no encode); re-encoded only when not on file
                    line = line_at(source, record.where) or encode(record.data)
                    where = (inode, fh.tell(), len(line))
                    fh.write(line)
                    index[record.session_id] = record._moved(where, self)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
            st = os.stat(self.path)  # we just wrote exactly these records: no need to read them back
            self._index = index
            self._live = {sid for sid, r in index.items() if r.status in LIVE_STATUSES}
            self._parked.clear()  # the index held them: they are in the new file now
            self._ordered = None
            self._offset, self._inode = st.st_size, st.st_ino
            self._last_compaction = now
        for record in dropped:
            if on_expired:
                on_expired(record)
        if dropped:
            log.info("compaction removed %d expired record(s)", len(dropped))
        return len(dropped)

    def compact_if_due(self, **kwargs: Any) -> int:
        if time.time() - self._last_compaction < COMPACT_EVERY:
            return 0
        return self.compact(**kwargs)

    def write_lock(self) -> threading.RLock:
        """The lock every write of this process takes (held across a shutdown that abandons threads)."""
        return self._write

    @property
    def skipped_lines(self) -> int:
        return self._skipped

    @property
    def commit_stats(self) -> GroupCommit:
        """The group commit's counters: ``batches`` written and ``records`` in them."""
        return self._commits

    # -- internals -------------------------------------------------------------------------------------
    def _current(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            self._refresh()
            return self._index.get(session_id)

    def _snapshot(self) -> list[SessionRecord]:
        with self._lock:
            self._refresh()
            if self._ordered is None:
                self._ordered = sorted(self._index.values(), key=lambda r: r.created, reverse=True)
            return self._ordered

    def _append(self, data: dict[str, Any]) -> SessionRecord:
        """Store one record, group-committed with whatever other threads of this process queued meanwhile
        (``groupcommit``); returns once this record is in the file."""
        began = time.perf_counter()
        own = encode(data)  # in the caller's thread: a record that cannot be encoded fails here, alone
        try:
            record = self._commits.commit((data, own))
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)
            raise StorageUnavailable() from exc
        metrics.store_write(time.perf_counter() - began)
        return record

    def _write_lines(self, batch: Sequence[tuple[dict[str, Any], bytes]]) -> list[SessionRecord]:
        """Append ``batch`` (records and their encoded lines) with a single ``write`` under the flock.

        Runs with ``self._write`` held (the group-commit leader). The flock, open and close happen outside
        ``self._lock``, so the next callers read the index and queue their records meanwhile; the write itself
        and the index update happen under it, so no reader sees lines that a failed write takes back.
        Records parked after a failed end of turn go first, unless the batch has a newer record of theirs.
        A short write is truncated back before the ``OSError`` is raised: a failed batch leaves nothing.
        """
        ids = {data["session_id"] for data, _ in batch}
        lines = b"".join(own for _, own in batch)
        with self._flocked():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                st = os.fstat(fd)
                with self._lock:
                    head = b"".join(encode(d) for sid, d in self._parked.items() if sid not in ids)
                    # Our index ends where the file ends (no other writer since our last read): our offset sits
                    # just past a newline we parsed, so the tail needs no check.
                    caught_up = st.st_ino == self._inode and st.st_size == self._offset
                    size, written = append_lines(fd, st.st_size, head + lines, self.path, tail_known=caught_up)
                    self._parked.clear()
                    if st.st_ino == self._inode and size == self._offset:
                        self._offset = size + written  # nothing else appended: our lines need no re-read
                        self._ordered = None
                    else:
                        self._refresh(locked=True)
                    records = []
                    position = size + len(head)
                    for data, own in batch:
                        record = SessionRecord(data, where=(st.st_ino, position, len(own)), store=self)
                        position += len(own)
                        self._put(record)
                        records.append(record)
            finally:
                os.close(fd)
        return records

    def _read_back(self, record: SessionRecord) -> dict[str, Any]:
        """The full object of a record whose large fields stayed in the file."""
        try:
            with opened(self.path) as source:
                line = line_at(source, record.where)
            data = decode_data(line) if line is not None else None
            if data is not None and data.get("session_id") == record.session_id:
                return data
        except OSError as exc:
            log.error("cannot read %s: %s", self.path, exc)
            raise StorageUnavailable() from exc
        # Another process compacted the file since this record was read: find its line in the new file.
        with self._lock:
            self._refresh()
            fresh = self._index.get(record.session_id)
        if fresh is not None and fresh is not record and fresh.where != record.where:
            return fresh.data
        return {
            "session_id": record.session_id,
            "status": record.status,
            "created": record.created,  # gone
            "expires": record.expires,
            "owner": record.owner,
        }  # (expired, compacted away): what is known

    @contextlib.contextmanager
    def _flocked(self) -> Iterator[None]:
        """The cross-process ``flock``; re-entrant (always taken under ``self._write``, so the depth is this
        thread's): a sweep that holds it while it checks a record can still write through the group commit."""
        if self._flock_depth:
            yield
            return
        with FileLock(self._lock_path):
            self._flock_depth += 1
            try:
                yield
            finally:
                self._flock_depth -= 1

    def _refresh(self, locked: bool = False) -> None:
        """Apply lines appended since our last read; reload fully after a compaction elsewhere."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._index:
                self._index.clear()
                self._live.clear()
                self._ordered = None
            self._offset, self._inode = 0, None
            return
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._load_all()
        elif st.st_size > self._offset:
            self._read_from(self._offset)

    def _load_all(self) -> None:
        self._index.clear()
        self._live.clear()
        self._ordered = None
        self._offset = 0
        self._skipped = 0
        try:
            self._inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            self._inode = None
            return
        self._read_from(0)

    def _read_from(self, offset: int) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return  # an unfinished last line: wait until its newline arrives
        body = chunk[: end + 1]
        self._offset = offset + end + 1
        self._ordered = None
        inode = self._inode or 0
        position = offset
        for raw in body.split(b"\n"):
            where = (inode, position, len(raw) + 1)
            position += len(raw) + 1
            if not raw.strip():
                continue
            record = _decode(raw, where=where, store=self)
            if record is None:
                self._skipped += 1
                log.warning("skipped an unreadable line in %s near byte %d", self.path.name, offset)
                continue
            self._put(record)

    def _put(self, record: SessionRecord) -> None:
        self._index[record.session_id] = record
        if record.status in LIVE_STATUSES:
            self._live.add(record.session_id)
        else:
            self._live.discard(record.session_id)


def _decode(
    raw: bytes, *, where: tuple[int, int, int] | None = None, store: SessionStore | None = None
) -> SessionRecord | None:
    data = decode_data(raw)
    return None if data is None else SessionRecord(data, where=where, store=store)
