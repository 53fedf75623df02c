"""Helpers for the limit tests: signed bodies, a second loopback address, Redis availability."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import redis_up

REDIS = ("127.0.0.1", 6379)
OTHER_IP = "127.0.0.2"  # a second client address on loopback (Linux routes all of 127/8 to lo)
NO_LIMITS = (
    "--rate-limit-per-minute",
    "0",
    "--max-turns-per-identity",
    "0",
    "--max-turns-per-ip",
    "0",
    "--max-ws-per-ip",
    "0",
)


def need_redis() -> None:
    if not redis_up():
        pytest.skip(f"no Redis at {REDIS[0]}:{REDIS[1]} (this test needs a real one)")


def agent_address(host: Any) -> str:
    return httpx.get(host.url + "/info", timeout=10).json()["address"]


def client_from(address: str, **kw: Any) -> httpx.AsyncClient:
    """An async client whose connections leave from ``address``."""
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address), timeout=60, **kw)


def assert_rate_limited(response: httpx.Response, *, max_retry_after: int) -> int:
    """429, the exact body, and an integer Retry-After in 1..max_retry_after; returns it."""
    assert response.status_code == 429, response.text
    assert response.json() == {"error": "too many requests"}
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= max_retry_after
    return retry_after
