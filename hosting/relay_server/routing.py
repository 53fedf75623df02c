"""The relay's routes: WebSocket and HTTP paths to the consumers of ``hosting.relay_server`` (``agents``,
``clients``, ``lookup``)."""

from __future__ import annotations

from typing import Any

from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path, re_path

from hosting.relay_server.agents import AnnounceConsumer
from hosting.relay_server.clients import InputConsumer
from hosting.relay_server.lookup import AgentLookupView, LookupConsumer, NotFoundView, RelayHealthView
from hosting.relay_server.registry import MemoryRegistry, RedisRegistry, Registry
from hosting.relay_server.server import RelayOptions, UnknownPathConsumer


def make_registry(options: RelayOptions) -> Registry:
    """Redis-backed when ``redis_url`` is set (several relay processes), else in this process."""
    if options.redis_url:
        return RedisRegistry(options.redis_url, ttl=options.agent_ttl, window=options.signature_window)
    return MemoryRegistry(ttl=options.agent_ttl, window=options.signature_window)


def relay_application(options: RelayOptions | None = None, registry: Registry | None = None) -> Any:
    """The relay as one ASGI application (``http`` and ``websocket``), sharing one registry."""
    options = options or RelayOptions.from_settings()
    registry = registry or make_registry(options)
    shared = {"registry": registry, "options": options}
    websocket = URLRouter(
        [
            path("ws/announce", AnnounceConsumer.as_asgi(**shared)),
            path("ws/input", InputConsumer.as_asgi(**shared)),
            path("ws/lookup", LookupConsumer.as_asgi(**shared)),
            re_path(r"", UnknownPathConsumer.as_asgi()),
        ]
    )
    http = URLRouter(
        [
            re_path(r"^api/agents/(?P<address>[^/]+)/(?P<part>profile)$", AgentLookupView.as_asgi(**shared)),
            re_path(r"^api/agents/(?P<address>[^/]+)$", AgentLookupView.as_asgi(**shared)),
            path("health", RelayHealthView.as_asgi(**shared)),
            re_path(r"", NotFoundView.as_asgi(**shared)),
        ]
    )
    return ProtocolTypeRouter({"http": http, "websocket": websocket})
