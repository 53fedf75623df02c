"""Our Redis clients under more concurrent callers than redis-py's default pool holds (100 connections since
redis 6: past it, ``MaxConnectionsError: Too many connections`` at once). A host runs up to ``pool_size`` (128)
turns at a time and each may call Redis (the replay log's ``last_seq`` at a turn's start, the one-use ledger,
the rate-limit buckets): measured behind haproxy, 11 of 1,000 concurrent turns on one replica were answered
``503 replay log unavailable (Redis is not answering)`` while Redis answered. A caller past the pool must
wait for a connection (within the call timeout), never fail because others are using the pool.

The callers are made to overlap by pausing our own ``redis-server`` (SIGSTOP) for less than the call timeout
while they start; the shared Redis on 6379 is not touched."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from sessions_app.redislog import RedisEventLog
from tests.support.hosts import OwnRedis
from trust.ledger import RedisLedger

CALLERS = 150  # more than redis-py's default pool, more than the host's default pool_size (128)


@pytest.fixture
def redis(tmp_path):
    server = OwnRedis(tmp_path).start()
    yield server
    server.stop()


def overlapping(redis: OwnRedis, call: Callable[[int], object]) -> list[BaseException]:
    """``call(i)`` from ``CALLERS`` threads at once, all started while Redis is paused; the errors raised."""
    errors: list[BaseException] = []
    started = threading.Barrier(CALLERS + 1)

    def caller(i: int) -> None:
        started.wait()
        try:
            call(i)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    redis.pause()
    try:
        started.wait()
        time.sleep(0.5)  # every caller is now inside its call, waiting on the paused server
    finally:
        redis.resume()
    for thread in threads:
        thread.join()
    return errors


def test_the_replay_log_serves_more_concurrent_readers_than_the_default_pool(redis):
    log = RedisEventLog(redis.url, namespace="concurrency", ttl=60)
    errors = overlapping(redis, lambda i: log.last_seq(f"session-{i}"))
    assert errors == []


def test_the_ledger_serves_more_concurrent_claims_than_the_default_pool(redis):
    ledger = RedisLedger(redis.url, prefix="concurrency:")
    errors = overlapping(redis, lambda i: ledger._insert(f"digest-{i}", time.time() + 60))
    assert errors == []
