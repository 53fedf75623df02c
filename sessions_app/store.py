"""Session results in ``.co/session_results.jsonl``, behind a small Django-style interface.

The file is append-only, one JSON object per line, and the last line for a ``session_id`` wins
(PROTOCOL §5.2). Readers keep an in-memory index and only read the file's new tail when another
process appended, so a lookup costs the same with a million records as with a thousand.
Writers take an exclusive ``flock`` and append each record with a single ``write`` of one line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One stored line. ``data`` is the full JSON object as written; fields are read from it."""

    data: dict[str, Any]

    @property
    def session_id(self) -> str:
        return self.data["session_id"]

    @property
    def status(self) -> str:
        return self.data.get("status", "")

    @property
    def created(self) -> float:
        return float(self.data.get("created") or 0)

    @property
    def expires(self) -> float:
        return float(self.data.get("expires") or 0)

    @property
    def owner(self) -> str | None:
        """The signer who owns the session (``session.requester.address``); None = anonymous."""
        owner = self.data.get("owner")
        if owner is None:
            requester = (self.data.get("session") or {}).get("requester") or {}
            owner = requester.get("address")
        return owner

    @property
    def session(self) -> dict[str, Any] | None:
        return self.data.get("session")

    def visible(self, now: float) -> bool:
        """A record is visible while a turn is live or until it expires (PROTOCOL §5.5)."""
        return self.status in LIVE_STATUSES or self.expires > now

    def summary(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "status": self.status, "created": int(self.created)}


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
        return lambda r: needle in str(r.data.get("prompt", "")).lower()
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
            with open(tmp, "wb") as fh:
                for record in sorted(keep, key=lambda r: r.data.get("updated_at", r.created)):
                    fh.write(_encode(record.data))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
            st = os.stat(self.path)  # we just wrote exactly these records: no need to read them back
            self._index = {r.session_id: r for r in keep}
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
                line = b"".join(_encode(d) for d in parked) + _encode(data)
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    size = os.fstat(fd).st_size
                    if size and os.pread(fd, 1, size - 1) != b"\n":
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
                self._refresh(locked=True)
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)
            raise StorageUnavailable() from exc
        record = SessionRecord(data)
        with self._lock:
            self._index[record.session_id] = record
        return record

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
        for raw in body.split(b"\n"):
            if not raw.strip():
                continue
            record = _decode(raw)
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


def _decode(raw: bytes) -> SessionRecord | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
        return None
    return SessionRecord(data)


def _writer_alive(record: SessionRecord) -> bool:
    pid, host = record.data.get("pid"), record.data.get("host")
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
            record = _decode(raw)
            if record is not None:
                yield record.data
