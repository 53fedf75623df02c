"""Our self-hostable relay (PROTOCOL §8.2) as Channels consumers: what its sockets share.

``/ws/announce`` carries an agent (``agents``): its ANNOUNCEs and its clients' traffic. ``/ws/input`` carries one
client (``clients``). ``GET /api/agents/{address}`` and ``/ws/lookup`` answer lookups (``lookup``). The sockets
never call each other: each consumer sends to the other's channel through the Channels layer and writes only to
its own socket, so one slow socket never blocks another and no lock is held across an await. Here: the options,
the channel layer, and ``RelaySocket``, the plumbing every relay socket has (bounded sends, the decoder).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, fields
from typing import Any

from channels.exceptions import ChannelFull, StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import InMemoryChannelLayer

from common.errors import HostError, relay_frame
from hosting.core.jsonwire import decode_frame
from hosting.relay_server.registry import Registry
from hosting.ws.dispatch import DirectDispatchMixin
from hosting.ws.wslimits import SocketTransport

logger = logging.getLogger("connectonion.relay.server")

# Largest client or agent frame (characters); runrelay sets it with daphne's cap (the agents' upload budget).
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
SEND_BUFFER_FULL = 4413  # as /ws (hosting.ws.consumers): more is owed to the peer than it may hold
SEND_STALL_SECONDS = 10.0  # as /ws: a server whose send waits (uvicorn) drops a peer that reads nothing this long


class RelayChannelLayer(InMemoryChannelLayer):
    """Channels' in-memory layer, with its expiry sweep run at most once a second.

    The stock layer sweeps every channel for expired messages on every ``receive``: with one channel
    per socket that is O(sockets) work per frame, and a relay with 4,000 sockets spent 14 s of CPU on a
    burst of 4,000 frames (bench/relay_bench.py). Expiry only bounds memory, so once a second is enough.
    """

    sweep_interval = 1.0
    _last_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            super()._clean_expired()


@dataclass(frozen=True)
class RelayOptions:
    """The relay's knobs; ``settings.RELAY`` (a dict with these keys) overrides the defaults."""

    agent_ttl: float = 120.0
    client_ping_interval: float = 30.0
    signature_window: float = 300.0
    announce_min_interval: float = 0.0
    redis_url: str | None = None
    # D28: the URL agents announce this relay as (``runrelay --public-url``); unset, the URL it is reached at.
    public_url: str | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # As /ws (``ws_max_frames_per_second``, ``ws_send_buffer_mb``): frames a client socket may send a second, and
    # bytes the relay may owe one socket (client or agent) that does not read. 0 = unlimited.
    max_frames_per_second: float = 200.0
    send_buffer_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_settings(cls) -> RelayOptions:
        from django.conf import settings

        given = getattr(settings, "RELAY", {}) or {}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in given.items() if k in known})


def to_json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)


class RelaySocket(DirectDispatchMixin, AsyncWebsocketConsumer):
    """Shared plumbing: the registry and options arrive through ``as_asgi(registry=…, options=…)``."""

    def __init__(self, *, registry: Registry, options: RelayOptions) -> None:
        super().__init__()
        self.registry = registry
        self.options = options

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.send(text_data=to_json(obj))

    async def send_bounded(self, text: str) -> bool:
        """Send ``text`` unless this socket already owes its peer more than ``send_buffer_bytes`` (under daphne,
        what its transport still holds: ``wslimits.SocketTransport``); then close it 4413, as /ws does, so a
        peer that never reads cannot grow the relay's memory. False once closed."""
        if getattr(self, "overflowed", False):
            return False
        if not hasattr(self, "transport"):
            self.transport = SocketTransport.of(self.base_send)
        limit = self.options.send_buffer_bytes
        if limit and self.transport is not None and self.transport.unsent() > limit:
            self.overflowed = True
            logger.warning("relay: closing a %s socket: over %d bytes unsent (send buffer)", self.role, limit)
            await self.close(code=SEND_BUFFER_FULL)
            return False
        if self.transport is not None and self.transport.waits:  # uvicorn: its send waits for the peer to read
            try:
                await asyncio.wait_for(self.send(text_data=text), SEND_STALL_SECONDS)
            except TimeoutError:
                self.overflowed = True
                logger.warning("relay: dropping a %s socket: nothing read for %.0f s", self.role, SEND_STALL_SECONDS)
                self.transport.abort()
                return False
            return True
        await self.send(text_data=text)
        return True

    async def post(self, channel: str, message: dict[str, Any]) -> bool:
        """Send to another socket's channel; a full channel drops the message (that socket is stuck)."""
        try:
            await self.channel_layer.send(channel, message)
            return True
        except ChannelFull:
            logger.warning("relay: channel %s is full; dropped a %s message", channel, message["type"])
            return False

    async def decode(self, text_data: str | None, bytes_data: bytes | None) -> dict[str, Any] | None:
        """The frame as a JSON object, or ``None`` after answering ``ERROR`` (the socket stays open).

        The host's decoder (``hosting.core.jsonwire.decode_frame``): size cap, strict JSON, depth limit."""
        if text_data is None:
            await self.send_json(self.error("Invalid JSON: binary frames are not supported"))
            return None
        try:
            return decode_frame(text_data, limit=self.options.max_message_bytes)
        except HostError as exc:
            await self.send_json(self.error(exc.message, received=text_data[:200]))
            return None

    def error(self, text: str, **extra: Any) -> dict[str, Any]:
        return relay_frame(HostError(text), **extra)


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path is closed with 4004 (as the host's PROTOCOL §4.1)."""

    async def connect(self) -> None:
        await self.accept()  # closing before accepting would be an HTTP 403, not a 4004 close
        await self.close(code=4004)
