"""Our relay's lookups (PROTOCOL §8.2): ``/ws/lookup`` (``GET_AGENT``, ``FIND``) and the HTTP answers,
``GET /api/agents/{address}`` and ``/health``; any other path is 404."""

from __future__ import annotations

from typing import Any

from channels.generic.http import AsyncHttpConsumer

from hosting.relay import wire
from hosting.relay_server.registry import Registry
from hosting.relay_server.server import RelayOptions, RelaySocket, to_json
from hosting.ws.dispatch import DirectDispatchMixin


class LookupConsumer(RelaySocket):
    """``/ws/lookup`` (optional in §8.2): ``GET_AGENT`` and ``FIND`` over a socket."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = await self.decode(text_data, bytes_data)
        if frame is None:
            return
        kind = frame.get("type")
        if kind == "GET_AGENT":
            address = frame.get("address")
            record = await self.registry.lookup(address) if wire.is_address(address) else None
            if record is None:
                await self.send_json({"type": "AGENT_INFO", "agent": None, "error": "Agent not found or offline"})
            else:
                await self.send_json({"type": "AGENT_INFO", "agent": record.public()})
        elif kind == "FIND":
            query = frame.get("query")
            query = query[:200] if isinstance(query, str) else ""
            found = await self.registry.find(query, 10)
            await self.send_json({"type": "AGENTS", "query": query, "agents": [r.public() for r in found]})
        else:
            await self.send_json(self.error(f"unknown message type: {str(kind)[:50]!r}"))


class _JsonHttp(DirectDispatchMixin, AsyncHttpConsumer):
    def __init__(self, *, registry: Registry, options: RelayOptions) -> None:
        super().__init__()
        self.registry = registry
        self.options = options

    async def respond(self, status: int, body: dict[str, Any]) -> None:
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        await self.send_response(status, to_json(body).encode("utf-8"), headers=headers)


class AgentLookupView(_JsonHttp):
    """``GET /api/agents/{address}`` (and ``…/profile``): the record, or 404 ``agent not found``."""

    async def handle(self, body: bytes) -> None:
        if self.scope["method"] not in ("GET", "HEAD"):
            await self.respond(405, {"error": "method not allowed"})
            return
        kwargs = self.scope["url_route"]["kwargs"]
        address = kwargs["address"]
        record = await self.registry.lookup(address) if wire.is_address(address) else None
        if record is None:
            await self.respond(404, {"error": "agent not found"})
        elif kwargs.get("part") == "profile":
            await self.respond(200, {"address": record.address, "profile": record.profile})
        else:
            await self.respond(200, record.public())


class RelayHealthView(_JsonHttp):
    """``GET /health``: the relay is up, and how many agents it carries."""

    async def handle(self, body: bytes) -> None:
        await self.respond(200, {"status": "ok", "agents": await self.registry.count()})


class NotFoundView(_JsonHttp):
    async def handle(self, body: bytes) -> None:
        path = self.scope.get("path", "")
        await self.respond(404, {"error": "agent not found" if path.startswith("/api/agents") else "not found"})
