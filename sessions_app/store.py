"""Session results in ``.co/session_results.jsonl``, behind a small Django-style interface.

The file is append-only, one JSON object per line, and the last line for a ``session_id`` wins
(PROTOCOL §5.2). Readers keep an in-memory index and only read the file's new tail when another
process appended, so a lookup costs the same with a million records as with a thousand.
Writers take an exclusive ``flock`` and append each record with a single ``write`` of one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from hosting.errors import StorageUnavailable

log = logging.getLogger("connectonion.store")

RUNNING = "running"
WAITING = "waiting_approval"
LIVE_STATUSES = frozenset({RUNNING, WAITING})
TERMINAL_STATUSES = frozenset({"done", "failed", "error", "interrupted", "cancelled"})
COMPACT_EVERY = 3600.0
_HOST = socket.gethostname()


class DoesNotExist(LookupError):
    """``SessionStore.get`` found no visible record with that id."""


class SessionRecord:
    """One stored line. Fields are read from ``data``, the full JSON object as written.

    A record read from (or written to) the file keeps in memory only what the index needs to answer lookups
    and filters: id, status, times, owner, the live turn's pid/host, and where its line is. Everything else
    (the prompt, the result, the conversation) stays in the file and ``data`` reads it back when asked (a
    ``GET /sessions/{id}``, the next turn). So the index costs a few hundred bytes per stored result instead of
    the whole record (~4 KiB for a short chat), and a host's RSS grows with retention only that much (L10).
    """

    __slots__ = ("session_id", "status", "created", "expires", "owner", "pid", "host",
                 "_inode", "_offset", "_length", "_store", "_full")

    def __init__(self, data: dict[str, Any], *, where: tuple[int, int, int] | None = None,
                 store: SessionStore | None = None) -> None:
        self.session_id: str = data["session_id"]
        status = data.get("status")
        self.status: str = sys.intern(status) if isinstance(status, str) else ""
        self.created = _number(data.get("created"))
        self.expires = _number(data.get("expires"))
        owner = _owner_of(data)
        self.owner: str | None = sys.intern(owner) if isinstance(owner, str) else None  # the owning signer
        live = self.status in LIVE_STATUSES
        self.pid = data.get("pid") if live else None  # which process runs the turn (crash recovery)
        host = data.get("host") if live else None
        self.host = sys.intern(host) if isinstance(host, str) else None
        self._store = store
        if where is None or store is None:
            self._inode = self._offset = self._length = -1
            self._full: dict[str, Any] | None = data  # never written (parked) or not from a store
        else:
            self._inode, self._offset, self._length = where
            self._full = None

    @property
    def data(self) -> dict[str, Any]:
        if self._full is not None:
            return self._full
        assert self._store is not None
        return self._store._read_back(self)

    @property
    def where(self) -> tuple[int, int, int] | None:
        """(inode, offset, length) of the stored line; None for a record never written."""
        return None if self._full is not None else (self._inode, self._offset, self._length)

    @property
    def prompt(self) -> str:
        return str(self.data.get("prompt") or "")

    @property
    def session(self) -> dict[str, Any] | None:
        return self.data.get("session")

    def visible(self, now: float) -> bool:
        """A record is visible while a turn is live or until it expires (PROTOCOL §5.5)."""
        return self.status in LIVE_STATUSES or self.expires > now

    def summary(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "status": self.status, "created": int(self.created)}

    def _moved(self, where: tuple[int, int, int], store: SessionStore) -> SessionRecord:
        """The same record at a new place (compaction rewrote the file)."""
        moved = SessionRecord.__new__(SessionRecord)
        for name in ("session_id", "status", "created", "expires", "owner", "pid", "host"):
            setattr(moved, name, getattr(self, name))
        moved._inode, moved._offset, moved._length = where
        moved._store, moved._full = store, None
        return moved

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionRecord) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SessionRecord({self.session_id!r}, status={self.status!r})"


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _owner_of(data: dict[str, Any]) -> str | None:
    owner = data.get("owner")
    if owner is None:
        requester = (data.get("session") or {}).get("requester") or {}
        owner = requester.get("address") if isinstance(requester, dict) else None
    return owner


class QuerySet:
    """A lazy, chainable view over the store's current records (newest ``created`` first)."""

    def __init__(self, store: SessionStore, predicates: tuple[Callable[[SessionRecord], bool], ...] = ()):
        self._store = store
        self._predicates = predicates

    def filter(self, **lookups: Any) -> QuerySet:
        """Supported lookups: ``status``, ``status__in``, ``owner``, ``prompt__icontains``,
        ``session_id__startswith``, ``visible`` (bool, evaluated at query time)."""
        preds = list(self._predicates)
        for key, value in lookups.items():
            preds.append(_lookup(key, value))
        return QuerySet(self._store, tuple(preds))

    def __iter__(self) -> Iterator[SessionRecord]:
        return iter(self._evaluate())

    def _evaluate(self) -> list[SessionRecord]:
        records = self._store._snapshot()
        return [r for r in records if all(p(r) for p in self._predicates)]

    def __getitem__(self, item: int | slice) -> Any:
        return self._evaluate()[item]

    def __len__(self) -> int:
        return len(self._evaluate())

    def count(self) -> int:
        return len(self)

    def first(self) -> SessionRecord | None:
        found = self._evaluate()
        return found[0] if found else None


def _lookup(key: str, value: Any) -> Callable[[SessionRecord], bool]:
    if key == "status":
        return lambda r: r.status == value
    if key == "status__in":
        allowed = frozenset(value)
        return lambda r: r.status in allowed
    if key == "owner":
        return lambda r: r.owner == value
    if key == "prompt__icontains":
        needle = str(value).lower()
        return lambda r: needle in r.prompt.lower()
    if key == "session_id__startswith":
        return lambda r: r.session_id.startswith(value)
    if key == "visible":
        return lambda r: r.visible(time.time()) == bool(value)
    raise TypeError(f"unsupported lookup {key!r}")


class SessionStore:
    """The JSONL store. Thread-safe within a process; safe across processes through ``flock``."""

    def __init__(self, path: Path, *, result_ttl: int = 86400) -> None:
        self.path = Path(path)
        self.result_ttl = result_ttl
        self._lock = threading.RLock()
        self._index: dict[str, SessionRecord] = {}
        self._ordered: list[SessionRecord] | None = None
        self._offset = 0
        self._inode: int | None = None
        self._skipped = 0
        self._last_compaction = 0.0
        self._parked: dict[str, dict[str, Any]] = {}  # terminal records not written yet (see update)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

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
            "pid": os.getpid(),
            "host": _HOST,
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
        data.pop("pid", None)
        data.pop("host", None)
        try:
            return self._append(data)
        except StorageUnavailable:
            # The end of a turn could not be written (disk full, read-only): this process answers with it
            # and writes it ahead of its next line, so the session is not left `running` (busy) for good.
            with self._lock:
                self._parked[session_id] = data
                self._index[session_id] = SessionRecord(data)
                self._ordered = None
            raise

    # -- maintenance ---------------------------------------------------------------------------------
    def recover_interrupted(self) -> int:
        """Mark records left ``running`` by a dead process as ``interrupted`` (PROTOCOL §5.5).

        A record written by a live process on this machine is left alone, so a worker starting
        beside others never interrupts their turns. Returns the number of records marked.
        """
        with self._lock:
            self._refresh()
            stale = [r for r in self._index.values() if r.status in LIVE_STATUSES and not _writer_alive(r)]
        now = time.time()
        for record in stale:  # a fresh expiry, so clients can still learn what happened
            self.update(record.session_id, status="interrupted", error="interrupted",
                        result=record.data.get("result"), expires=int(now + self.result_ttl))
        if stale:
            log.warning("marked %d turn(s) left running by a stopped process as interrupted", len(stale))
        return len(stale)

    def compact(self, *, now: float | None = None, on_expired: Callable[[SessionRecord], None] | None = None) -> int:
        """Rewrite the file keeping the newest visible record per id; returns records dropped.

        Temp file + fsync + rename under the lock, so readers see either the old or the new file.
        """
        now = time.time() if now is None else now
        with self._lock, self._flocked():
            self._refresh(locked=True)
            keep = [r for r in self._index.values() if r.visible(now)]
            dropped = [r for r in self._index.values() if not r.visible(now)]
            tmp = self.path.with_name(self.path.name + f".compact-{os.getpid()}")
            index: dict[str, SessionRecord] = {}
            with open(tmp, "wb") as fh, _opened(self.path) as source:
                inode = os.fstat(fh.fileno()).st_ino
                # in the order they were written (file order), records never written (parked) last
                for record in sorted(keep, key=lambda r: (r.where is None, r.where or (0, 0, 0))):
                    # the stored bytes as they are (no decode, no encode); re-encoded only when not on file
                    line = _line_at(source, record.where) or _encode(record.data)
                    where = (inode, fh.tell(), len(line))
                    fh.write(line)
                    index[record.session_id] = record._moved(where, self)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
            st = os.stat(self.path)  # we just wrote exactly these records: no need to read them back
            self._index = index
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
        return self._lock

    @property
    def skipped_lines(self) -> int:
        return self._skipped

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
        try:
            with self._lock, self._flocked():
                parked = [d for sid, d in self._parked.items() if sid != data["session_id"]]
                own = _encode(data)
                line = b"".join(_encode(d) for d in parked) + own
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    st = os.fstat(fd)
                    size = st.st_size
                    # Our index already ends where the file ends (no other writer since our last read): our offset
                    # sits just past a newline we parsed, so the tail needs no check and our own line no re-read.
                    caught_up = st.st_ino == self._inode and size == self._offset
                    if size and not caught_up and os.pread(fd, 1, size - 1) != b"\n":
                        size = _drop_torn_tail(fd, size, self.path)
                    written = 0
                    try:
                        written = os.write(fd, line)
                        if written != len(line):
                            raise OSError(errno.ENOSPC, "short write")
                    except OSError:
                        if written:  # disk full mid-line: take the partial line back, never leave it torn
                            os.ftruncate(fd, size)
                        raise
                finally:
                    os.close(fd)
                self._parked.clear()
                if caught_up:
                    self._offset = size + written
                    self._ordered = None
                else:
                    self._refresh(locked=True)
                record = SessionRecord(data, where=(st.st_ino, size + written - len(own), len(own)), store=self)
                self._index[record.session_id] = record
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)
            raise StorageUnavailable() from exc
        return record

    def _read_back(self, record: SessionRecord) -> dict[str, Any]:
        """The full object of a record whose large fields stayed in the file."""
        try:
            with _opened(self.path) as source:
                line = _line_at(source, record.where)
            data = _decode_data(line) if line is not None else None
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
        return {"session_id": record.session_id, "status": record.status, "created": record.created,  # gone
                "expires": record.expires, "owner": record.owner}  # (expired, compacted away): what is known

    def _flocked(self):
        return _FileLock(self._lock_path)

    def _refresh(self, locked: bool = False) -> None:
        """Apply lines appended since our last read; reload fully after a compaction elsewhere."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._index:
                self._index.clear()
                self._ordered = None
            self._offset, self._inode = 0, None
            return
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._load_all()
        elif st.st_size > self._offset:
            self._read_from(self._offset)

    def _load_all(self) -> None:
        self._index.clear()
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
            self._index[record.session_id] = record


class _FileLock:
    """``flock`` on a side file, so compaction's rename never swaps the lock away from a writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[int, int] | None]:
    """``(fd, inode)`` of the results file opened for reading, or None when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd, os.fstat(fd).st_ino
    finally:
        os.close(fd)


def _line_at(source: tuple[int, int] | None, where: tuple[int, int, int] | None) -> bytes | None:
    """The whole stored line at ``where`` (with its newline), or None when that file has been replaced since
    (another process compacted it) or removed, or the record was never written."""
    if source is None or where is None or where[0] != source[1]:
        return None
    line = os.pread(source[0], where[2], where[1])
    return line if len(line) == where[2] and line.endswith(b"\n") else None


def _drop_torn_tail(fd: int, size: int, path: Path) -> int:
    """Cut an unterminated last line (a write that never returned: a crash or a full disk) under the lock.

    Writers append whole lines under ``flock``, so such a tail is never a write in progress; it is dropped
    rather than ended with a newline, which would revive a record whose write never returned (FI3).
    Returns the new size.
    """
    end = size
    while end > 0:
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    log.warning("dropped an unfinished last line (%d bytes) in %s", size - end, path.name)
    return end


def _encode(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode(
        "utf-8", "backslashreplace"
    )


def _decode(raw: bytes, *, where: tuple[int, int, int] | None = None,
            store: SessionStore | None = None) -> SessionRecord | None:
    data = _decode_data(raw)
    return None if data is None else SessionRecord(data, where=where, store=store)


def _decode_data(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
        return None
    return data


def _writer_alive(record: SessionRecord) -> bool:
    pid, host = record.pid, record.host
    if not isinstance(pid, int) or host != _HOST:
        return False
    if pid == os.getpid():
        return False  # our own process just started: nothing of ours can be running yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_lines(path: Path) -> Iterable[dict[str, Any]]:
    """Every parseable record of a JSONL file in order (for tools and tests)."""
    with open(path, "rb") as fh:
        for raw in fh:
            data = _decode_data(raw)
            if data is not None:
                yield data
