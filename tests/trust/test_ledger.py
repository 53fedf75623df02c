"""The one-use ledger (PROTOCOL §2.4, HARDENING S9-S11): atomic claims on the database and on Redis."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from common.errors import Misconfigured
from hosting.core.config import HostConfig
from trust.ledger import DatabaseLedger, MemoryLedger, RedisLedger, get_ledger, signature_digest

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def race(ledger, signature: bytes, threads: int = 8) -> list[bool]:
    """Claim one signature from several threads released at the same instant."""
    barrier = threading.Barrier(threads)
    results: list[bool] = []
    errors: list[BaseException] = []

    def worker() -> None:
        from django.db import connection

        try:
            barrier.wait(timeout=10)
            results.append(ledger.claim(signature, expires_at=time.time() + 300))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=30)
    assert not errors, errors
    return results


def redis_ledger() -> RedisLedger:
    ledger = RedisLedger(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        ledger._client.ping()
    except Exception as exc:  # the reason is shown in the skip line
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc.__class__.__name__}")
    return ledger


def test_digest_is_over_the_raw_signature_bytes():
    raw = bytes(range(64))
    assert signature_digest(raw) == signature_digest(bytearray(raw))
    assert len(signature_digest(raw)) == 64


def test_memory_ledger_first_claim_wins():
    ledger = MemoryLedger()
    assert ledger.claim(b"s" * 64, expires_at=time.time() + 300) is True
    assert ledger.claim(b"s" * 64, expires_at=time.time() + 300) is False
    assert ledger.claim(b"t" * 64, expires_at=time.time() + 300) is True


@pytest.mark.django_db
def test_database_ledger_claims_once():
    ledger = DatabaseLedger()
    assert ledger.claim(b"a" * 64, expires_at=time.time() + 300) is True
    assert ledger.claim(b"a" * 64, expires_at=time.time() + 300) is False


@pytest.mark.django_db
def test_database_ledger_prune_deletes_only_expired_rows():
    from trust.models import SeenSignature

    SeenSignature.objects.create(digest="a" * 64, expires_at=time.time() - 1)
    SeenSignature.objects.create(digest="b" * 64, expires_at=time.time() + 300)
    assert DatabaseLedger().prune() == 1
    assert list(SeenSignature.objects.values_list("digest", flat=True)) == ["b" * 64]


@pytest.mark.django_db
def test_database_ledger_prunes_while_claiming():
    from trust.models import SeenSignature

    SeenSignature.objects.create(digest="a" * 64, expires_at=time.time() - 1)
    assert DatabaseLedger().claim(b"n" * 64, expires_at=time.time() + 300)
    assert not SeenSignature.objects.filter(digest="a" * 64).exists()


@pytest.mark.django_db(transaction=True)
def test_database_ledger_two_threads_exactly_one_wins():
    for round_ in range(5):
        results = race(DatabaseLedger(), bytes([round_]) * 64, threads=2)
        assert sorted(results) == [False, True]


@pytest.mark.django_db(transaction=True)
def test_database_ledger_eight_threads_exactly_one_wins():
    results = race(DatabaseLedger(), b"\x42" * 64, threads=8)
    assert results.count(True) == 1 and len(results) == 8


@pytest.mark.django_db(transaction=True)
def test_s11_database_ledger_failure_fails_closed():
    from django.db import connection

    from trust.models import SeenSignature

    with connection.schema_editor() as editor:
        editor.delete_model(SeenSignature)
    try:
        with pytest.raises(Misconfigured) as info:
            DatabaseLedger().claim(b"z" * 64, expires_at=time.time() + 300)
        assert (info.value.status, info.value.message) == (
            503,
            "misconfigured: replay protection unavailable",
        )
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(SeenSignature)


@pytest.mark.redis
def test_redis_ledger_claims_once_with_expiry():
    ledger = redis_ledger()
    try:
        assert ledger.claim(b"r" * 64, expires_at=time.time() + 120) is True
        assert ledger.claim(b"r" * 64, expires_at=time.time() + 120) is False
        ttl = ledger._client.ttl(ledger.prefix + signature_digest(b"r" * 64))
        assert 100 < ttl <= 120
    finally:
        ledger.close()


@pytest.mark.redis
def test_redis_ledger_two_threads_exactly_one_wins():
    ledger = redis_ledger()
    try:
        for round_ in range(5):
            assert sorted(race(ledger, bytes([round_]) * 64, threads=2)) == [False, True]
        assert race(ledger, b"\x99" * 64, threads=8).count(True) == 1
    finally:
        ledger.close()


def test_s11_unreachable_redis_fails_closed():
    ledger = RedisLedger("redis://127.0.0.1:1/0", timeout=0.5)
    with pytest.raises(Misconfigured) as info:
        ledger.claim(b"q" * 64, expires_at=time.time() + 300)
    assert info.value.message == "misconfigured: replay protection unavailable"


def test_get_ledger_picks_redis_when_configured(tmp_path):
    assert isinstance(get_ledger(HostConfig(project_dir=tmp_path, redis_url=REDIS_URL)), RedisLedger)
    assert isinstance(get_ledger(HostConfig(project_dir=tmp_path)), DatabaseLedger)
