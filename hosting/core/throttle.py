"""Per-caller limits (HARDENING A4, L9, W14): the turn rate per identity (token buckets, shared by every
worker through Redis when ``redis_url`` is set), concurrent turns per identity and per client address,
WebSocket connections per address, and the wrong-token window of the admin API. Plain Python: the views,
the WebSocket conversation and the router call it; every refusal is ``RateLimited`` (429, Retry-After).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common import metrics
from common.errors import RateLimited
from common.redisclient import sync_client

if TYPE_CHECKING:
    from django.http import HttpRequest

    from hosting.core.config import HostConfig
    from hosting.core.pools import WorkPool

log = logging.getLogger("connectonion.limits")

BUSY_RETRY_AFTER = 2  # seconds: a concurrency cap frees when one of the caller's turns ends; no better guess
REDIS_PAUSE = 5.0  # after a Redis failure, use the per-process buckets this long (one warning per outage)
MAX_KEYS = 10_000  # idle keys are forgotten past this many, so the tables stay small

Release = Callable[[], None]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``burst`` tokens, refilled at ``per_second``; one token per request."""

    per_second: float
    burst: int

    def retry_after(self, wait: float) -> int:
        """Whole seconds for the Retry-After header (at least 1)."""
        return max(1, math.ceil(wait))


class LocalBuckets:
    """Token buckets in this process (thread-safe). ``take`` returns 0 when admitted, else the wait in seconds."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic time)
        self._lock = threading.Lock()

    def take(self, key: str, rate: Rate) -> float:
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - then) * rate.per_second)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / rate.per_second
            if len(self._buckets) >= MAX_KEYS and key not in self._buckets:
                self._forget_full(now, rate)
            self._buckets[key] = (tokens, now)
            return wait

    def _forget_full(self, now: float, rate: Rate) -> None:
        refill = rate.burst / rate.per_second
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}


# KEYS[1] = bucket; ARGV = rate per second, burst. The server's clock (TIME) is the one clock every worker
# shares. Returns the wait in seconds as a string (a Lua number would come back truncated to an integer).
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisBuckets:
    """The same buckets in Redis, updated atomically by one Lua script, so N workers share one limit.

    Redis trouble never locks callers out: the take falls back to this process's buckets (a per-worker
    limit) for ``REDIS_PAUSE`` seconds at a time, with one warning per outage.
    """

    def __init__(self, url: str, *, prefix: str, timeout: float = 0.5) -> None:
        self.prefix = prefix
        self.fallback = LocalBuckets()
        self._client = sync_client(url, timeout=timeout)
        self._script = self._client.register_script(_TAKE)
        self._paused_until = 0.0
        self._outage = False

    def take(self, key: str, rate: Rate) -> float:
        if time.monotonic() < self._paused_until:
            return self.fallback.take(key, rate)
        try:
            wait = float(self._script(keys=[self.prefix + key], args=[repr(rate.per_second), rate.burst]))
        except Exception as exc:  # noqa: BLE001 - any Redis failure: per-worker limits, never a lock-out
            self._paused_until = time.monotonic() + REDIS_PAUSE
            if not self._outage:
                self._outage = True
                log.warning(
                    "rate limits: Redis unavailable (%s: %s); using per-worker limits until it answers",
                    exc.__class__.__name__,
                    exc,
                )
            return self.fallback.take(key, rate)
        if self._outage:
            self._outage = False
            log.warning("rate limits: Redis answers again; limits are shared by every worker")
        return wait

    def close(self) -> None:
        self._client.close()


class Counter:
    """Things held per key (running turns, open sockets) in this process, each key with one cap."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    def acquire(self, wanted: Iterable[tuple[str, int]]) -> Release | None:
        """Take one of each ``(key, cap)`` (cap 0 = unlimited) all at once; ``None`` if any is full.

        Returns the release function, which may be called more than once (only the first call counts).
        """
        wanted = [(key, cap) for key, cap in wanted if cap > 0]
        with self._lock:
            if any(self._held.get(key, 0) >= cap for key, cap in wanted):
                return None
            for key, _ in wanted:
                self._held[key] = self._held.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                for key, _ in wanted:
                    left = self._held.get(key, 0) - 1
                    if left > 0:
                        self._held[key] = left
                    else:
                        self._held.pop(key, None)

        return release


class FailureWindow:
    """Failures per key in a sliding window (the admin API's wrong tokens, HARDENING A4); per process."""

    def __init__(self, allowed: int, window: float) -> None:
        self.allowed, self.window = allowed, window
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, key: str) -> None:
        """Raise ``RateLimited`` while ``key`` has ``allowed`` failures in the window."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(key, now)
            if len(times) >= self.allowed:
                raise RateLimited(retry_after=max(1, math.ceil(times[0] + self.window - now)))

    def failed(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(key, now).append(now)
            if len(self._seen) > MAX_KEYS:
                for idle in [k for k, v in self._seen.items() if not v]:
                    del self._seen[idle]


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``trusted_proxies`` entries (addresses or CIDR networks); raises ``ValueError`` naming a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value!r}") from None
    return tuple(networks)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The caller's address: the socket peer, or, only when that peer is a trusted proxy, the nearest
    ``X-Forwarded-For`` hop that is not itself a trusted proxy (read right to left: the left part is
    whatever the client chose to send)."""
    address = peer or "unknown"
    if not forwarded_for or not trusted or not _trusted(address, trusted):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage in the chain: stop at the last hop we could read
        address = hop
        if not _trusted(hop, trusted):
            break
    return address


def scope_address(scope: dict, trusted: tuple[Network, ...]) -> str:
    """The client address of an ASGI connection (HTTP or WebSocket scope): see ``client_address``."""
    forwarded = dict(scope.get("headers") or []).get(b"x-forwarded-for")
    peer = (scope.get("client") or (None,))[0]
    return client_address(peer, forwarded.decode("latin-1") if forwarded is not None else None, trusted)


@dataclass(frozen=True)
class Caller:
    """Who a turn is counted against: ``identity`` (the verified signer, else ``anon:<address>``) and
    the client ``address`` (``None`` when unknown, e.g. a relayed client)."""

    identity: str
    address: str | None

    @classmethod
    def of(cls, signer: str | None, address: str | None, *, anonymous: str | None = None) -> Caller:
        if signer:
            return cls(signer.lower(), address)
        return cls(f"anon:{anonymous or address or 'unknown'}", address)


class Throttle:
    """The turn limits of one process, built from the config (0 = unlimited for every cap)."""

    def __init__(self, config: HostConfig, *, namespace: str = "", pool: WorkPool | None = None) -> None:
        self.rate = (
            Rate(config.rate_limit_per_minute / 60.0, config.rate_limit_burst)
            if config.rate_limit_per_minute > 0
            else None
        )
        self.per_identity = config.max_turns_per_identity
        self.per_address = config.max_turns_per_ip
        self.buckets: LocalBuckets | RedisBuckets = (
            RedisBuckets(config.redis_url, prefix=f"connectonion:rate:{namespace}:")
            if config.redis_url and self.rate is not None
            else LocalBuckets()
        )
        self.trusted_proxies = parse_networks(config.trusted_proxies)
        self.turns = Counter()
        if isinstance(self.buckets, RedisBuckets) and pool is None:
            raise ValueError("shared rate limits (redis_url) need a pool for the Redis round trip")
        self.pool = pool  # where the Redis round trip runs (the runtime's bookkeeping pool)

    def request_address(self, request: HttpRequest) -> str:
        """The client address of a Django request (see ``client_address``)."""
        return client_address(
            request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"), self.trusted_proxies
        )

    def socket_address(self, scope: dict) -> str:
        """The client address of a WebSocket (see ``scope_address``)."""
        return scope_address(scope, self.trusted_proxies)

    async def check_rate(self, caller: Caller) -> None:
        """Take one token from the caller's bucket; raises ``RateLimited`` when it is empty.

        The Redis round trip runs in a thread of ``pool``, never on the event loop."""
        if self.rate is None:
            return
        if isinstance(self.buckets, RedisBuckets):
            assert self.pool is not None  # (checked in __init__)
            wait = await self.pool.run(self.buckets.take, caller.identity, self.rate)
        else:
            wait = self.buckets.take(caller.identity, self.rate)
        self._refuse_after(wait)

    def take_rate(self, caller: Caller) -> None:
        """``check_rate`` from a thread (a pool task that admits its own turn): the Redis round trip runs here."""
        if self.rate is not None:
            self._refuse_after(self.buckets.take(caller.identity, self.rate))

    def _refuse_after(self, wait: float) -> None:
        if wait > 0:
            assert self.rate is not None
            metrics.refused("rate")
            raise RateLimited(retry_after=self.rate.retry_after(wait))

    def hold_turn(self, caller: Caller) -> Release:
        """Count one running turn against the caller (this process); raises ``RateLimited`` over a cap."""
        wanted: list[tuple[str, int]] = [("identity:" + caller.identity, self.per_identity)]
        if caller.address is not None:
            wanted.append(("address:" + caller.address, self.per_address))
        release = self.turns.acquire(wanted)
        if release is None:
            metrics.refused("turns")
            raise RateLimited(retry_after=BUSY_RETRY_AFTER)
        return release
