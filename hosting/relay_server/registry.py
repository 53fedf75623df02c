"""Who is announced on this relay: one record per address, naming the channel of its announce socket.

Consumers never hold references to each other; they find an agent here and talk to its socket through
the Channels layer. ``MemoryRegistry`` serves one relay process. ``RedisRegistry`` keeps the same records
in Redis so several relay processes behind one address share them (with ``channels_redis`` as the layer,
a client socket on one process reaches an agent socket on another).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from common.redisclient import async_client


@dataclass
class AgentRecord:
    """What a relay keeps for an announced agent (PROTOCOL §8.2) plus the channel that reaches it."""

    address: str
    channel: str
    timestamp: float
    last_seen: float
    summary: str = ""
    endpoints: list[str] = field(default_factory=list)
    relay: str | None = None
    profile: dict[str, Any] | None = None
    relay_features: list[str] = field(default_factory=list)

    @property
    def routes_by_conn_id(self) -> bool:
        return "conn_id" in self.relay_features

    def public(self) -> dict[str, Any]:
        """The ``GET /api/agents/{address}`` body: ``last_seen`` as ISO-8601 UTC without a zone suffix."""
        seen = datetime.fromtimestamp(self.last_seen, UTC).replace(tzinfo=None).isoformat()
        return {
            "address": self.address,
            "summary": self.summary,
            "endpoints": self.endpoints,
            "relay": self.relay,
            "last_seen": seen,
            "online": True,
            "profile": self.profile,
        }


class StaleAnnounce(Exception):
    """An ANNOUNCE whose timestamp is not newer than the last one accepted for its address (a replay)."""


class Registry(Protocol):
    async def register(self, record: AgentRecord) -> str | None:
        """Store ``record``; return the channel that held the address before, if it was another one.

        Raises ``StaleAnnounce`` when ``record.timestamp`` is not newer than the last accepted one.
        """

    async def lookup(self, address: str) -> AgentRecord | None:
        """The live record of ``address`` (any case), or ``None`` when unknown or expired."""

    async def unregister(self, address: str, channel: str) -> None:
        """Forget ``address`` if ``channel`` still holds it (a replaced socket never removes its successor)."""

    async def find(self, query: str, limit: int = 10) -> list[AgentRecord]:
        """Live records whose address, summary or profile mention ``query`` (case-insensitive)."""

    async def count(self) -> int: ...


class MemoryRegistry:
    """The registry of one relay process. Every method is atomic (no awaits inside)."""

    def __init__(self, *, ttl: float = 120.0, window: float = 300.0, clock: Callable[[], float] = time.time):
        self.ttl = ttl
        self.window = window
        self.clock = clock
        self._agents: dict[str, AgentRecord] = {}
        self._last_timestamp: dict[str, float] = {}

    async def register(self, record: AgentRecord) -> str | None:
        now = self.clock()
        last = self._last_timestamp.get(record.address)
        if last is not None and record.timestamp <= last:
            raise StaleAnnounce(record.address)
        self._last_timestamp[record.address] = record.timestamp
        if len(self._last_timestamp) > 2 * len(self._agents) + 1024:
            # Timestamps older than the window can no longer be replayed: forget them.
            self._last_timestamp = {
                a: t for a, t in self._last_timestamp.items() if t >= now - self.window or a in self._agents
            }
        previous = self._agents.get(record.address)
        self._agents[record.address] = record
        if previous is not None and previous.channel != record.channel:
            return previous.channel
        return None

    async def lookup(self, address: str) -> AgentRecord | None:
        record = self._agents.get(address.lower())
        if record is None:
            return None
        if self.clock() - record.last_seen > self.ttl:
            del self._agents[record.address]
            return None
        return record

    async def unregister(self, address: str, channel: str) -> None:
        record = self._agents.get(address)
        if record is not None and record.channel == channel:
            del self._agents[address]

    async def find(self, query: str, limit: int = 10) -> list[AgentRecord]:
        needle = query.lower()
        now = self.clock()
        found = []
        for record in list(self._agents.values()):
            if now - record.last_seen > self.ttl:
                continue
            text = " ".join((record.address, record.summary, json.dumps(record.profile or {}))).lower()
            if needle in text:
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    async def count(self) -> int:
        now = self.clock()
        return sum(1 for r in self._agents.values() if now - r.last_seen <= self.ttl)


# Redis: one JSON value per agent with a TTL, one last-timestamp key per address. The two scripts make
# "check the timestamp, store, report the previous channel" and "delete if still mine" atomic.
_REGISTER = """
local last = redis.call('GET', KEYS[2])
if last and tonumber(ARGV[2]) <= tonumber(last) then return {-1, false} end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if previous then return {1, previous} end
return {0, false}
"""
_UNREGISTER = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['channel'] == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisRegistry:
    """Records in Redis, shared by every relay process that uses the same Redis and the same prefix."""

    def __init__(self, url: str, *, ttl: float = 120.0, window: float = 300.0, prefix: str = "corelay"):
        self.ttl = ttl
        self.window = window
        self.prefix = prefix
        self._redis = async_client(url, decode_responses=True)
        self._register = self._redis.register_script(_REGISTER)
        self._unregister = self._redis.register_script(_UNREGISTER)

    def _key(self, address: str) -> str:
        return f"{self.prefix}:agent:{address}"

    async def register(self, record: AgentRecord) -> str | None:
        keys = [self._key(record.address), f"{self.prefix}:ts:{record.address}"]
        args = [
            json.dumps(asdict(record)),
            repr(float(record.timestamp)),
            int(self.ttl * 1000),
            int(self.window * 2000),
        ]
        status, previous = await self._register(keys=keys, args=args)
        if int(status) < 0:
            raise StaleAnnounce(record.address)
        if previous:
            channel = json.loads(previous).get("channel")
            return channel if channel != record.channel else None
        return None

    async def lookup(self, address: str) -> AgentRecord | None:
        raw = await self._redis.get(self._key(address.lower()))
        return AgentRecord(**json.loads(raw)) if raw else None

    async def unregister(self, address: str, channel: str) -> None:
        await self._unregister(keys=[self._key(address)], args=[channel])

    async def find(self, query: str, limit: int = 10) -> list[AgentRecord]:
        needle = query.lower()
        found: list[AgentRecord] = []
        async for key in self._redis.scan_iter(match=f"{self.prefix}:agent:*", count=200):
            raw = await self._redis.get(key)
            if raw and needle in raw.lower():
                found.append(AgentRecord(**json.loads(raw)))
                if len(found) >= limit:
                    break
        return found

    async def count(self) -> int:
        return sum([1 async for _ in self._redis.scan_iter(match=f"{self.prefix}:agent:*", count=200)])

    async def aclose(self) -> None:
        await self._redis.aclose()
