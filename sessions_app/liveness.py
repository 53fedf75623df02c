"""Whether the process that runs a turn is still alive, by something a dead process cannot fake (PROTOCOL D30).

Every running record names the *worker* that runs it: a random token made when the process starts, never a
process id (a pid can be a zombie or reused by another program). Two mechanisms sit behind one interface:

- ``FileLiveness`` (one machine, the default): each process holds an exclusive ``flock`` on
  ``.co/live/<token>.lock`` for as long as it runs. The kernel drops the lock when the process exits, however
  it exits (SIGKILL, OOM, a zombie not yet reaped), so "can I take this lock?" answers "is it dead?" exactly.
- ``DatabaseLiveness`` (replicas on several machines): each process keeps a lease row in the shared
  PostgreSQL database, renewed every ``renew_every`` seconds and valid ``lease_seconds`` from the database's
  own clock (no skew between machines). A process that stops renewing is dead once its lease lapses.

A sweeper thread in every serving process (``Sweeper``) asks the store, every ``SWEEP_EVERY`` seconds, to
record as ``interrupted`` each running turn whose worker is dead. The store makes that write conditional on
the record being unchanged, so however many sweepers notice at once the turn is marked once, and its
session accepts a new turn at the next request, on any worker, with or without a restart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("connectonion.liveness")

SWEEP_EVERY = 2.0  # seconds between two sweeps of a serving process
LEASE_SECONDS = 10.0  # how long a lease stays valid without renewal (DatabaseLiveness)
RENEW_EVERY = 2.0  # how often a live process renews its lease


class Liveness(Protocol):
    """The one interface of both mechanisms."""

    token: str  # this process's worker token, written into the records of the turns it runs
    kind: str  # "file" or "lease", for /health and the banner

    def start(self) -> None:
        """Claim this process's token (take the lock / write the first lease); idempotent."""

    def alive(self, token: str | None) -> bool:
        """Whether the worker holding ``token`` still runs. ``None`` (a record from before workers had
        tokens) is never alive."""

    def purge(self) -> int:
        """Forget the marks of dead workers (start-up); returns how many."""

    def stop(self) -> None:
        """Give the token up (tests; a process that exits loses it anyway)."""


class FileLiveness:
    """A held ``flock`` per process in one folder (every worker of every host on this machine's project)."""

    kind = "file"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.token = uuid.uuid4().hex
        self._fd = -1
        self._lock = threading.Lock()

    def _path(self, token: str) -> Path:
        return self.folder / f"{token}.lock"

    def start(self) -> None:
        with self._lock:
            if self._fd >= 0:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            # Lock a temporary name first, then rename: a file under the final name is always locked from the
            # moment it appears, so a sweeper can never take (and delete) it between our create and our flock.
            tmp = self.folder / f".{self.token}.tmp"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.replace(tmp, self._path(self.token))
            self._fd = fd

    def alive(self, token: str | None) -> bool:
        if not isinstance(token, str) or not token.isalnum():
            return False
        if token == self.token:
            return self._fd >= 0
        try:
            fd = os.open(self._path(token), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # never claimed here, or found dead and removed before
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return True  # its owner holds it: alive
                raise
            with contextlib.suppress(FileNotFoundError):  # we hold it: its owner is gone for good
                os.unlink(self._path(token))
            return False
        finally:
            os.close(fd)

    def purge(self) -> int:
        """Remove the lock files of dead processes (start-up); returns how many."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.folder.glob("*.lock"):
                if not self.alive(path.stem):
                    removed += 1
        return removed

    def stop(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(self.token))
            os.close(self._fd)
            self._fd = -1


class DatabaseLiveness:
    """A lease row per process in the shared database (``store: postgres``): replicas on several machines.

    ``start`` writes the lease and a daemon thread renews it every ``renew_every`` s; it is valid for
    ``lease_seconds`` on the database server's clock, so machines with skewed clocks agree. A process that
    dies (or loses the database for longer than the lease) stops renewing, and once its lease lapsed the
    other replicas' sweepers record its turns ``interrupted``.
    """

    kind = "lease"

    def __init__(
        self, alias: str = "results", *, lease_seconds: float = LEASE_SECONDS, renew_every: float = RENEW_EVERY
    ) -> None:
        self.alias = alias
        self.lease_seconds = lease_seconds
        self.renew_every = renew_every
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _sql(self, sql: str, params: tuple) -> list[tuple]:
        from django.db import connections

        connection = connections[self.alias]
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()  # back to the pool

    def renew(self) -> None:
        self._sql(
            "INSERT INTO sessions_app_lease (token, expires) VALUES (%s, extract(epoch FROM clock_timestamp())"
            " + %s) ON CONFLICT (token) DO UPDATE SET expires = EXCLUDED.expires",
            (self.token, self.lease_seconds),
        )

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self.renew()  # a failure here is the first request's clear "storage unavailable"
                self._thread = threading.Thread(target=self._loop, name="liveness-lease", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - the renewer thread outlives any failure
                log.error(
                    "could not renew this worker's lease (%s); its turns are interrupted elsewhere if the "
                    "database stays unreachable for %.0f s",
                    exc,
                    self.lease_seconds,
                )

    def alive(self, token: str | None) -> bool:
        if not isinstance(token, str):
            return False
        return bool(
            self._sql(
                "SELECT 1 FROM sessions_app_lease WHERE token = %s AND expires > extract(epoch FROM clock_timestamp())",
                (token,),
            )
        )

    def purge(self) -> int:
        """Delete leases that lapsed over an hour ago."""
        return len(
            self._sql(
                "DELETE FROM sessions_app_lease WHERE expires < extract(epoch FROM clock_timestamp())"
                " - 3600 RETURNING token",
                (),
            )
        )

    def stop(self) -> None:
        self._stop.set()
        self._sql("DELETE FROM sessions_app_lease WHERE token = %s", (self.token,))


class Sweeper:
    """Every ``every`` seconds, ``sweep()`` (the store's "interrupt the turns of dead workers"), on a daemon
    thread, never on the event loop. A failing sweep is logged and retried at the next tick."""

    def __init__(self, sweep: Callable[[], int], every: float = SWEEP_EVERY) -> None:
        self.sweep = sweep
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sweeper:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="liveness-sweeper", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sweep()
            except Exception:
                log.exception("liveness sweep failed; retrying in %.0f s", self.every)

    def stop(self) -> None:
        self._stop.set()
