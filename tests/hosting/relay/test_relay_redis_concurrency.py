"""``runrelay --redis-url``: the registry serves more concurrent lookups and announces than redis-py's default
pool holds (100 connections; past them ``Too many connections`` at once). A relay whose agents all reconnect
after a restart, or whose clients look agents up at once, has many more than that in flight. Made to overlap by
pausing our own ``redis-server`` (SIGSTOP) while they start; the shared Redis on 6379 is not touched."""

from __future__ import annotations

import asyncio

import pytest

from hosting.relay_server.registry import RedisRegistry
from tests.support.hosts import OwnRedis

CALLERS = 150


@pytest.fixture
def redis(tmp_path):
    server = OwnRedis(tmp_path).start()
    yield server
    server.stop()


async def test_the_registry_serves_more_concurrent_lookups_than_the_default_pool(redis):
    registry = RedisRegistry(redis.url)
    assert await registry.lookup("0x" + "0" * 64) is None
    redis.pause()
    try:
        lookups = [asyncio.create_task(registry.lookup(f"0x{i:064x}")) for i in range(CALLERS)]
        await asyncio.sleep(0.5)  # every lookup is now waiting on the paused server, or for a connection
    finally:
        redis.resume()
    answers = await asyncio.gather(*lookups, return_exceptions=True)
    assert answers == [None] * CALLERS
