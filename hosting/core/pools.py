"""The one way the host hands blocking work to a thread: a ``WorkPool``, bounded, with one async hand-off.

Every process has two of them (``Pools``):

- ``agents``: the agent turns (``pool_size`` threads, ``hosting.core.turns``): a turn holds its thread for as
  long as its agent runs, minutes perhaps;
- ``bookkeeping``: the short blocking steps around them (the gate's checks, session store and replay log
  reads, opening and wrapping large sealed frames, the Redis rate bucket, storing a timed-out turn). Its own
  threads, so running agents can never starve a handshake, a 401, a resume or the record of a timeout.

No ``sync_to_async`` (asgiref's executor and per-call context copying) and no ``run_in_executor(None)`` (the
loop's unbounded-by-us default executor): the one exception, the Django admin's stale-connection reset in
``hosting.web.middleware``, must run on asgiref's thread-sensitive thread and says why there.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# As many threads as asyncio's default executor, which served the bookkeeping before it had a pool of its own.
BOOKKEEPING_THREADS = min(32, (os.cpu_count() or 1) + 4)


class CountingExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` that counts the calls given to it and not yet finished (queued or running)."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.in_flight = 0
        self._count_lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._count_lock:
            self.in_flight += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)  # run once, when it ends or is cancelled
        return future

    def _finished(self, _future: Future[Any] | None) -> None:
        with self._count_lock:
            self.in_flight -= 1


class WorkPool:
    """A bounded thread pool with one hand-off from the event loop (``run``) and one from a thread (``submit``)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.executor = CountingExecutor(max_workers=size, thread_name_prefix=name)

    def has_free_thread(self) -> bool:
        """Whether a call given now starts at once (fewer calls in flight than threads), rather than queueing
        behind the ones that hold every thread. Exact when, as for the agents' pool, only the loop submits."""
        return self.executor.in_flight < self.size

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in one of the pool's threads and wait for it (event loop)."""
        return await self.start(fn, *args, **kwargs)

    def start(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Like ``run``, but returns the future at once, for callbacks (event loop)."""
        call = functools.partial(fn, *args, **kwargs) if kwargs else fn
        return asyncio.get_running_loop().run_in_executor(self.executor, call, *([] if kwargs else args))

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn`` in one of the pool's threads without waiting (from any thread)."""
        return self.executor.submit(fn, *args, **kwargs)

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False) -> None:
        self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)


@dataclass(frozen=True)
class Pools:
    """The process's two pools (see the module docstring)."""

    agents: WorkPool
    bookkeeping: WorkPool

    @classmethod
    def build(cls, agent_threads: int, bookkeeping_threads: int = BOOKKEEPING_THREADS) -> Pools:
        return cls(WorkPool("agent", agent_threads), WorkPool("bookkeeping", bookkeeping_threads))

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False) -> None:
        self.agents.shutdown(wait=wait, cancel_futures=cancel_futures)
        self.bookkeeping.shutdown(wait=wait, cancel_futures=cancel_futures)
