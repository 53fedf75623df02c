"""A stored session result (``SessionRecord``), its statuses, and the Django-style ``QuerySet`` over a store.

Shared by every store backend: the JSONL file (``sessions_app.store``) and PostgreSQL (``sessions_app.dbstore``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sessions_app.store import SessionStore

RUNNING = "running"
WAITING = "waiting_approval"
LIVE_STATUSES = frozenset({RUNNING, WAITING})
TERMINAL_STATUSES = frozenset({"done", "failed", "error", "interrupted", "cancelled"})


class DoesNotExist(LookupError):
    """``SessionStore.get`` found no visible record with that id."""


class SessionRecord:
    """One stored line. Fields are read from ``data``, the full JSON object as written.

    A record read from (or written to) the file keeps in memory only what the index needs to answer lookups
    and filters: id, status, times, owner, the live turn's worker token, and where its line is. Everything else
    (the prompt, the result, the conversation) stays in the file and ``data`` reads it back when asked (a
    ``GET /sessions/{id}``, the next turn). So the index costs a few hundred bytes per stored result instead of
    the whole record (~4 KiB for a short chat), and a host's RSS grows with retention only that much (L10).
    """

    __slots__ = (
        "_full",
        "_inode",
        "_length",
        "_offset",
        "_store",
        "created",
        "expires",
        "owner",
        "session_id",
        "status",
        "worker",
    )

    def __init__(
        self, data: dict[str, Any], *, where: tuple[int, int, int] | None = None, store: SessionStore | None = None
    ) -> None:
        self.session_id: str = data["session_id"]
        status = data.get("status")
        self.status: str = sys.intern(status) if isinstance(status, str) else ""
        self.created = _number(data.get("created"))
        self.expires = _number(data.get("expires"))
        owner = _owner_of(data)
        self.owner: str | None = sys.intern(owner) if isinstance(owner, str) else None  # the owning signer
        live = self.status in LIVE_STATUSES
        worker = data.get("worker") if live else None  # which process runs the turn (liveness.py, D30)
        self.worker: str | None = sys.intern(worker) if isinstance(worker, str) else None
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
        for name in ("session_id", "status", "created", "expires", "owner", "worker"):
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
