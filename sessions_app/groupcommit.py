"""Group commit: every record queued while a write is under way goes into the next write, together.

Shared by the stores (the JSONL file, PostgreSQL) and the SQLite replay log. A caller queues its record and
then takes the store's write lock; whoever holds the lock (the *leader*) takes every record queued so far and
writes them in one go (one ``write`` of several lines; one transaction), and the others, once they get the
lock, find their record already written and return at once. Nobody hands a record to another thread and waits
to be woken: the thread that arrives first does the work, so a lone turn pays exactly what it paid before
and a busy host pays the fixed cost of a write (open, lock, fstat, close; a transaction's commit) once per
batch instead of once per record.

Each caller still returns only when *its* record is stored (or raises what stopped it): durability before
the answer is unchanged. A batch that fails as a whole is retried record by record, so a record that cannot
be stored (too large for the space left, a row the database refuses) fails only its own caller, and the
store never keeps half a batch (the writer rolls a failed write back before it raises).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


class Entry:
    """One queued record and, once its batch was written, what its caller gets (a result or an exception)."""

    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    """Leader/follower batching of writes under ``lock`` (the store's own write lock, an ``RLock``).

    ``write(items)`` stores the items in one go, in order, with the lock held; it returns one result per item,
    where an exception *instance* is raised to that item's caller only (e.g. ``SessionBusy`` for one row of
    a transaction that commits the others). If ``write`` raises, nothing of the batch may be stored; the
    items are then written one at a time, each caller getting its own outcome.

    ``batches`` and ``records`` count what was written (records / batches = the batching achieved).
    """

    def __init__(self, write: Callable[[Sequence[Any]], Sequence[Any]], *, lock: Any) -> None:
        self._write = write
        self._lock = lock
        self._queue: list[Entry] = []
        self._queued = threading.Lock()  # guards _queue only; never held while writing
        self.batches = 0
        self.records = 0

    def commit(self, item: Any) -> Any:
        """Store ``item`` (with whatever else is queued) and return its result once it is stored."""
        return self.wait(self.enqueue(item))

    def enqueue(self, item: Any) -> Entry:
        """Queue ``item`` without waiting (the next leader writes it); ``wait`` for it later."""
        entry = Entry(item)
        with self._queued:
            self._queue.append(entry)
        return entry

    def wait(self, entry: Entry) -> Any:
        """Return once ``entry`` is stored, writing the queue ourselves if no one else has yet."""
        if not entry.done:
            with self._lock:
                if not entry.done:
                    self._drain_locked()
        return entry.outcome()

    def drain(self) -> int:
        """Write whatever is queued (a background writer's turn); returns how many records that was."""
        with self._lock:
            return self._drain_locked()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _drain_locked(self) -> int:
        with self._queued:
            batch, self._queue = self._queue, []
        if not batch:
            return 0
        try:
            self._settle(batch, self._write([e.item for e in batch]))
        except BaseException as exc:  # noqa: BLE001 - each waiter gets its own outcome, whatever failed
            if len(batch) == 1:
                self._fail(batch, exc)
            else:
                for entry in batch:  # nothing of the batch was kept: each record on its own
                    try:
                        self._settle([entry], self._write([entry.item]))
                    except BaseException as single:  # noqa: BLE001 - each waiter gets its own outcome
                        self._fail([entry], single)
        return len(batch)

    def _settle(self, batch: list[Entry], results: Sequence[Any]) -> None:
        self.batches += 1
        self.records += len(batch)
        for entry, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                entry.error = result
            else:
                entry.result = result
            entry.done = True

    @staticmethod
    def _fail(batch: list[Entry], exc: BaseException) -> None:
        for entry in batch:
            entry.error = exc
            entry.done = True
