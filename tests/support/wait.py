"""Polling until a condition holds, bounded by a deadline (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

INTERVAL = 0.05


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 15.0,
    what: str = "condition",
    *,
    interval: float = INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call ``predicate`` until it returns something truthy and return that; fail naming ``what`` after
    ``timeout`` seconds. Exceptions of the ``ignore`` types count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(interval)


async def wait_until(
    condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition", *, interval: float = 0.02
) -> Any:
    """The async form of :func:`wait_for`: ``condition`` may be sync or return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        await asyncio.sleep(interval)
