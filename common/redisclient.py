"""The host's synchronous Redis clients (replay log, one-use ledger, rate-limit buckets), made one way.

redis-py's default pool holds 100 connections and, past them, raises ``Too many connections`` at once. A host
process runs up to ``pool_size`` turns at a time (128 by default) and each may call Redis, so a burst of turns
on one process failed with a Redis error while Redis was answering. Here a caller past the pool waits for a
free connection for as long as a call may take (``timeout``), like any slow call, and then fails as one.
This module imports nothing of ours; ``redis`` is imported only when a client is made."""

from __future__ import annotations

from typing import Any

MAX_CONNECTIONS = 512  # per client and process: above any pool_size in use; Redis allows 10,000 clients


def sync_client(url: str, *, timeout: float, **options: Any) -> Any:
    """A ``redis.Redis`` for ``url`` whose calls, and waits for a pooled connection, give up after ``timeout``."""
    import redis

    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **options,
    )
    return redis.Redis(connection_pool=pool)


def async_client(url: str, *, pool_timeout: float = 20.0, **options: Any) -> Any:
    """A ``redis.asyncio.Redis`` for ``url`` whose callers past the pool wait up to ``pool_timeout`` for a
    connection (the same default pool of 100 raised at once for the 101st concurrent call)."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=pool_timeout, **options
    )
    return aioredis.Redis(connection_pool=pool)
