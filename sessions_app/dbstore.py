"""Session results in PostgreSQL (``store: postgres``, issue 18), behind the JSONL store's interface.

``get`` / ``filter`` / ``create`` / ``update``, TTL expiry (a running record never expires), ownership and
the sweep for the turns of dead workers behave as in ``store.SessionStore``; several machines share the
table, so a result written on one replica is read on any other. Writes lock the row
(``SELECT … FOR UPDATE``): a session's new turn is refused while another replica runs one, and a turn whose
worker's lease lapsed is recorded ``interrupted`` once, whichever replica's sweeper noticed first.
The creates and updates a process's threads queue while a transaction is under way are committed together
in the next one (group commit, ``sessions_app.groupcommit``): one commit (one WAL flush) per batch.

Queries go through the ``results`` database alias: the same database as ``default``, with a bounded
connection pool, and every operation hands its connection back when done, so a host's 128 agent threads
share a few connections instead of holding one each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.db import Error as DatabaseError
from django.db import IntegrityError, connections, transaction
from django.db.models import Q

from common.errors import SessionBusy, StorageUnavailable
from sessions_app.groupcommit import GroupCommit
from sessions_app.liveness import Liveness
from sessions_app.models import SessionResult
from sessions_app.records import LIVE_STATUSES, RUNNING, DoesNotExist, SessionRecord

log = logging.getLogger("connectonion.store")

ALIAS = "results"
_COLUMNS = ("session_id", "status", "created", "expires", "updated_at", "owner", "worker")


class DatabaseQuerySet:
    """A lazy, chainable query (newest ``created`` first), with the JSONL store's lookups."""

    def __init__(self, store: DatabaseStore, q: Q | None = None) -> None:
        self._store = store
        self._q = q or Q()

    def filter(self, **lookups: Any) -> DatabaseQuerySet:
        q = self._q
        for key, value in lookups.items():
            q &= _lookup(key, value)
        return DatabaseQuerySet(self._store, q)

    def _rows(self, window: slice | None = None) -> list[SessionRecord]:
        with self._store._op():
            rows = SessionResult.objects.using(ALIAS).filter(self._q).order_by("-created", "session_id")
            return [_record(row) for row in (rows[window] if window is not None else rows)]

    def __iter__(self) -> Iterator[SessionRecord]:
        return iter(self._rows())

    def __getitem__(self, item: int | slice) -> Any:
        if isinstance(item, slice):
            return self._rows(item)
        found = self._rows(slice(item, item + 1))
        if not found:
            raise IndexError(item)
        return found[0]

    def __len__(self) -> int:
        return self.count()

    def count(self) -> int:
        with self._store._op():
            return SessionResult.objects.using(ALIAS).filter(self._q).count()

    def first(self) -> SessionRecord | None:
        found = self._rows(slice(0, 1))
        return found[0] if found else None


def _lookup(key: str, value: Any) -> Q:
    if key in ("status", "status__in", "prompt__icontains", "session_id__startswith"):
        return Q(**{key: value})
    if key == "owner":
        return Q(owner__isnull=True) if value is None else Q(owner=value)
    if key == "visible":
        shown = Q(status__in=LIVE_STATUSES) | Q(expires__gt=time.time())
        return shown if value else ~shown
    raise TypeError(f"unsupported lookup {key!r}")


def _record(row: SessionResult) -> SessionRecord:
    return _record_of([getattr(row, name) for name in _COLUMNS], row.data)


def _record_of(columns: Sequence[Any], text: str) -> SessionRecord:
    """A record from its column values (in ``_COLUMNS`` order) and its ``data`` JSON."""
    data = json.loads(text)
    for name, value in zip(_COLUMNS, columns, strict=True):
        if value is not None or name in data:
            data[name] = value
    if data.get("worker") is None:
        data.pop("worker", None)
    return SessionRecord(data)


def _values(data: dict[str, Any]) -> tuple[Any, ...]:
    """A record as the row's values, in ``_FIELDS`` order."""
    rest = {k: v for k, v in data.items() if k not in _COLUMNS}
    prompt = data.get("prompt")
    return (
        data["session_id"],
        data["status"],
        float(data.get("created") or 0),
        float(data.get("expires") or 0),
        float(data.get("updated_at") or time.time()),
        data.get("owner"),
        data.get("worker") if data["status"] in LIVE_STATUSES else None,
        prompt.replace("\x00", "") if isinstance(prompt, str) else "",
        json.dumps(rest, ensure_ascii=True, separators=(",", ":"), default=str),
    )


def _row(data: dict[str, Any]) -> SessionResult:
    return SessionResult(**dict(zip(_FIELDS, _values(data), strict=True)))


# The request path's statements as plain SQL on the ORM's connection: building and compiling a queryset cost
# more CPU than the round trip (issue 20). The ORM keeps the admin, listings and maintenance. (The table and
# columns are SessionResult's; tests/e2e/replicas runs these against PostgreSQL.)
_FIELDS = (*_COLUMNS, "prompt", "data")
_SELECT = (
    "SELECT session_id, status, created, expires, updated_at, owner, worker, data"
    " FROM sessions_app_result WHERE session_id = %s"
)
_CREATE = (
    "INSERT INTO sessions_app_result (session_id, status, created, expires, updated_at, owner, worker, prompt, data)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (session_id) DO UPDATE SET created = trunc(sessions_app_result.created),"
    " status = EXCLUDED.status, expires = EXCLUDED.expires, updated_at = EXCLUDED.updated_at,"
    " owner = EXCLUDED.owner, worker = EXCLUDED.worker, prompt = EXCLUDED.prompt, data = EXCLUDED.data"
    " WHERE sessions_app_result.status <> ALL (%s) RETURNING created"
)
_UPDATE = (
    "UPDATE sessions_app_result SET status = %s, created = %s, expires = %s, updated_at = %s, owner = %s,"
    " worker = %s, prompt = %s, data = %s WHERE session_id = %s"
)


class DatabaseStore:
    kind = "postgres"
    skipped_lines = 0

    def __init__(self, *, result_ttl: int = 86400, liveness: Liveness | None = None) -> None:
        self.result_ttl = result_ttl
        self.liveness = liveness
        self._lock = threading.RLock()  # every write of this process (held across a shutdown: write_lock)
        self._depth = threading.local()
        self._parked: dict[str, dict[str, Any]] = {}  # terminal records the database refused (written later)
        self._commits = GroupCommit(self._write_rows, lock=self._lock)  # the writes queued meanwhile: one commit

    @contextlib.contextmanager
    def _op(self) -> Iterator[None]:
        """One store operation: database errors become ``StorageUnavailable`` (503); the connection goes
        back to the pool at the end of the outermost operation of this thread."""
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        try:
            yield
        except DatabaseError as exc:
            if isinstance(exc, IntegrityError):
                raise
            log.error("session store: database unavailable: %s", exc)
            raise StorageUnavailable() from exc
        finally:
            self._depth.n = depth
            if depth == 0:
                with contextlib.suppress(DatabaseError):
                    connections[ALIAS].close()

    # -- the Django-style surface ----------------------------------------------------------------------
    def all(self) -> DatabaseQuerySet:
        return DatabaseQuerySet(self)

    def filter(self, **lookups: Any) -> DatabaseQuerySet:
        return DatabaseQuerySet(self).filter(**lookups)

    def get(self, session_id: str, *, include_expired: bool = False) -> SessionRecord:
        parked = self._parked.get(session_id)
        if parked is not None:
            record = SessionRecord(parked)
        else:
            with self._op(), connections[ALIAS].cursor() as cursor:
                cursor.execute(_SELECT, [session_id])
                row = cursor.fetchone()
            if row is None:
                raise DoesNotExist(session_id)
            record = _record_of(row[:-1], row[-1])
        if not include_expired and not record.visible(time.time()):
            raise DoesNotExist(session_id)
        return record

    def create(self, *, session_id: str, prompt: str, owner: str | None = None, **fields: Any) -> SessionRecord:
        """Write the ``running`` record of a new turn (``created`` kept across turns). Refused with
        ``SessionBusy`` while the session's previous turn is live, on this replica or another."""
        self._flush_parked()
        if self.liveness is not None:
            with self._op():
                self.liveness.start()  # (once) the lease exists before the first running record names it
        try:
            return self._commits.commit((self._create_row, session_id, {"prompt": prompt, "owner": owner, **fields}))
        except IntegrityError:  # another replica created the same new session at the same moment
            raise SessionBusy() from None

    def update(self, session_id: str, **fields: Any) -> SessionRecord:
        """Change ``fields`` of the latest record (e.g. status ``done``)."""
        terminal = fields.get("status") is not None and fields["status"] not in LIVE_STATUSES
        try:
            record = self._commits.commit((self._update_row, session_id, fields))
        except StorageUnavailable:
            if terminal:  # answered with it; written at the next sweep, so the session is not left busy
                parked = dict(self._parked.get(session_id) or {"session_id": session_id, "status": "failed"})
                parked.update(fields)
                self._parked[session_id] = parked
            raise
        self._parked.pop(session_id, None)
        return record

    @property
    def commit_stats(self) -> GroupCommit:
        """The group commit's counters: ``batches`` (transactions) and ``records`` written in them."""
        return self._commits

    def _write_rows(self, batch: Sequence[tuple[Callable[..., SessionRecord], str, dict[str, Any]]]) -> list[Any]:
        """Every create/update queued since the last commit, in one transaction (the group-commit leader).

        Rows are locked in session-id order, so two replicas' batches cannot deadlock on each other. A turn
        refused (``SessionBusy``, ``DoesNotExist``) writes nothing and fails only its caller; any database
        error rolls the whole transaction back and ``GroupCommit`` retries the rows one by one.
        """
        order = sorted(range(len(batch)), key=lambda i: batch[i][1])
        results: list[Any] = [None] * len(batch)
        with self._op(), transaction.atomic(using=ALIAS):
            for i in order:
                write, session_id, fields = batch[i]
                try:
                    results[i] = write(session_id, fields)
                except (SessionBusy, DoesNotExist) as exc:
                    results[i] = exc
        return results

    def _create_row(self, session_id: str, fields: dict[str, Any]) -> SessionRecord:
        """The running record: one ``INSERT … ON CONFLICT DO UPDATE`` that keeps the session's ``created`` and
        touches no live row (then ``SessionBusy``): the row stays locked until the batch commits, as with
        ``SELECT … FOR UPDATE``, and a new session another replica inserts meanwhile is waited for and seen."""
        fields = dict(fields)  # (a batch that failed is retried row by row with the same items)
        now = time.time()
        data: dict[str, Any] = {
            "session_id": session_id,
            "prompt": fields.pop("prompt"),
            "status": RUNNING,
            "created": int(now),
            "expires": int(now + self.result_ttl),
            "owner": fields.pop("owner"),
            "worker": self.liveness.token if self.liveness is not None else None,
            "updated_at": now,
        }
        data.update(fields)
        with connections[ALIAS].cursor() as cursor:
            cursor.execute(_CREATE, [*_values(data), list(LIVE_STATUSES)])
            stored = cursor.fetchone()
        if stored is None:
            raise SessionBusy()
        data["created"] = int(stored[0])
        return SessionRecord(data)

    def _update_row(self, session_id: str, fields: dict[str, Any]) -> SessionRecord:
        with connections[ALIAS].cursor() as cursor:
            cursor.execute(_SELECT + " FOR UPDATE", [session_id])
            row = cursor.fetchone()
            if row is None:
                raise DoesNotExist(session_id)
            data = _record_of(row[:-1], row[-1]).data
            data.update(fields)
            data["updated_at"] = time.time()
            if data.get("status") not in LIVE_STATUSES:
                for key in ("worker", "pid", "host"):
                    data.pop(key, None)
            values = _values(data)
            cursor.execute(_UPDATE, [*values[1:], values[0]])
        return SessionRecord(data)

    # -- maintenance ---------------------------------------------------------------------------------
    def recover_interrupted(self) -> int:
        """Record each live turn whose worker is dead ``interrupted``, once (see ``store.SessionStore``)."""
        self._flush_parked()
        alive = self.liveness.alive if self.liveness is not None else (lambda token: False)
        with self._op():
            live = list(
                SessionResult.objects.using(ALIAS).filter(status__in=LIVE_STATUSES).values_list("session_id", "worker")
            )
        verdicts: dict[str | None, bool] = {}
        for _, worker in live:
            if worker not in verdicts:
                verdicts[worker] = alive(worker)
        dead = [sid for sid, worker in live if not verdicts[worker]]
        if not dead:
            return 0
        dead_workers = [w for w, ok in verdicts.items() if not ok]
        marked = 0
        with self._op(), self._lock, transaction.atomic(using=ALIAS):
            now = time.time()
            rows = (
                SessionResult.objects.using(ALIAS)
                .select_for_update(skip_locked=True)
                .filter(session_id__in=dead, status__in=LIVE_STATUSES)
                .filter(
                    Q(worker__in=[w for w in dead_workers if w is not None]) | Q(worker__isnull=True)
                    if None in dead_workers
                    else Q(worker__in=dead_workers)
                )
            )
            for row in rows:
                data = _record(row).data
                data.update(
                    status="interrupted", error="interrupted", updated_at=now, expires=int(now + self.result_ttl)
                )
                data.pop("worker", None)
                _row(data).save(using=ALIAS, force_update=True)
                marked += 1
        if marked:
            log.warning("marked %d turn(s) of stopped workers as interrupted", marked)
        return marked

    def _flush_parked(self) -> None:
        for session_id, data in list(self._parked.items()):
            fields = {k: v for k, v in data.items() if k != "session_id"}
            with contextlib.suppress(StorageUnavailable, DoesNotExist):
                self.update(session_id, **fields)

    def compact(self, *, now: float | None = None, on_expired: Callable[[SessionRecord], None] | None = None) -> int:
        """Delete expired results (running ones never expire); returns how many."""
        now = time.time() if now is None else now
        with self._op():
            expired = SessionResult.objects.using(ALIAS).filter(expires__lte=now).exclude(status__in=LIVE_STATUSES)
            if on_expired is not None:
                for row in expired:
                    on_expired(_record(row))
            dropped, _ = expired.delete()
        if dropped:
            log.info("removed %d expired result(s)", dropped)
        return dropped

    def compact_if_due(self, **kwargs: Any) -> int:
        return self.compact(**kwargs)

    def write_lock(self) -> threading.RLock:
        return self._lock
