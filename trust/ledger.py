"""The one-use ledger (PROTOCOL §2.4): a signature opens one request, shared by every worker.

Synchronous on purpose: async callers run ``claim`` in a thread. Any backend failure fails closed
with ``Misconfigured("misconfigured: replay protection unavailable")`` (HARDENING S11).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from common.errors import Misconfigured
from common.redisclient import sync_client

if TYPE_CHECKING:
    from trust.options import TrustOptions

logger = logging.getLogger("connectonion.trust")

UNAVAILABLE = "misconfigured: replay protection unavailable"


def signature_digest(signature: bytes) -> str:
    """Ledger key: hex SHA-256 of the raw signature bytes, so every hex spelling of one signature collides."""
    return hashlib.sha256(bytes(signature)).hexdigest()


class Ledger:
    """Remembers signatures until they expire. Subclasses implement ``_insert``."""

    def claim(self, signature: bytes, *, expires_at: float) -> bool:
        """Atomically record ``signature``; True the first time it is seen, False for a repeat.

        ``expires_at`` is the signed timestamp plus the window: after it the signature fails the
        freshness check anyway, so the entry may be forgotten. Raises ``Misconfigured`` on failure.
        """
        try:
            return self._insert(signature_digest(signature), float(expires_at))
        except Misconfigured:
            raise
        except Exception as exc:  # any storage failure must refuse, never admit
            logger.error("replay ledger unavailable: %s: %s", exc.__class__.__name__, exc)
            raise Misconfigured(UNAVAILABLE) from exc

    def _insert(self, digest: str, expires_at: float) -> bool:
        raise NotImplementedError


class MemoryLedger(Ledger):
    """A per-process ledger for single-process tools and tests; never chosen by ``get_ledger``."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock  # a gate with its own clock (tests) passes the same one

    def _insert(self, digest: str, expires_at: float) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {d: e for d, e in self._seen.items() if e >= now}
            if digest in self._seen and self._seen[digest] >= now:
                return False
            self._seen[digest] = expires_at
            return True


class DatabaseLedger(Ledger):
    """Rows of ``trust.SeenSignature``; the primary key makes the insert atomic across processes."""

    def __init__(self, *, prune_every: float = 60.0, attempts: int = 12) -> None:
        self.prune_every = prune_every
        self.attempts = attempts
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()

    def _insert(self, digest: str, expires_at: float) -> bool:
        from django.db import IntegrityError, OperationalError, connection, transaction

        from trust.models import SeenSignature

        # One plain INSERT in autocommit (atomic on its own): the ORM's create() and a transaction block
        # cost several times the statement itself, once per signed request.
        table = connection.ops.quote_name(SeenSignature._meta.db_table)  # our model's name, not input
        sql = f"INSERT INTO {table} (digest, expires_at) VALUES (%s, %s)"  # noqa: S608
        for attempt in range(self.attempts):
            try:
                # Inside a caller's transaction a savepoint keeps a duplicate from breaking it.
                with (
                    transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext(),
                    connection.cursor() as cursor,
                ):
                    cursor.execute(sql, (digest, expires_at))
            except IntegrityError:
                return False
            except OperationalError as exc:
                # SQLite answers "locked" when a concurrent writer holds the table past its busy
                # timeout (or at once, for shared-cache databases): a short retry, then fail closed.
                if "locked" not in str(exc) or attempt == self.attempts - 1:
                    raise
                time.sleep(min(0.25, 0.01 * 2**attempt) * (0.5 + random.random()))
            else:
                self._maybe_prune()
                return True
        raise AssertionError("unreachable")

    def _maybe_prune(self) -> None:
        now = time.time()
        if now < self._next_prune or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._next_prune = now + self.prune_every
            self.prune(now)
        finally:
            self._prune_lock.release()

    def prune(self, now: float | None = None) -> int:
        """Delete expired rows; returns how many went."""
        from trust.models import SeenSignature

        deleted, _ = SeenSignature.objects.filter(expires_at__lt=time.time() if now is None else now).delete()
        return deleted


class RedisLedger(Ledger):
    """``SET key 1 NX EX ttl`` in Redis: atomic across processes and hosts."""

    def __init__(self, url: str, *, prefix: str = "connectonion:seen:", timeout: float = 2.0) -> None:
        self.prefix = prefix
        self._client = sync_client(url, timeout=timeout)

    def _insert(self, digest: str, expires_at: float) -> bool:
        ttl = max(1, math.ceil(expires_at - time.time()))
        return bool(self._client.set(self.prefix + digest, b"1", nx=True, ex=ttl))

    def close(self) -> None:
        self._client.close()


@lru_cache(maxsize=8)
def _redis_ledger(url: str) -> RedisLedger:
    return RedisLedger(url)


def get_ledger(config: TrustOptions) -> Ledger:
    """Redis when ``config.redis_url`` is set, else the database. One Redis client per URL per process."""
    if config.redis_url:
        return _redis_ledger(config.redis_url)
    return DatabaseLedger()
