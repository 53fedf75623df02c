"""WebSocket routing: ``/ws`` only (anything else closes with 4004), behind our Origin rule (D22/D23) and
the per-address socket cap (``max_ws_per_ip``: close 4429, HARDENING W14)."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

from common import metrics
from hosting.core.network import allowed_host, allowed_origin
from hosting.core.throttle import Counter, parse_networks, scope_address
from hosting.ws.consumers import TRANSPORT_KEY, AgentConsumer
from hosting.ws.wslimits import SocketTransport

log = logging.getLogger("connectonion.ws")

# 4000 + the HTTP status, like 4003 / 4004 / 4408: the socket twin of 429. (RFC 6455's 1013 "try again later"
# is what we mean, but autobahn lets an application send only 1000 and 3000-4999.)
TOO_MANY_SOCKETS = 4429
WARN_EVERY = 60.0
_last_warning = -WARN_EVERY
_last_host_warning = -WARN_EVERY


class WebSocketRouter:
    """Channels' stock origin validators refuse clients without ``Origin``; ours serves them (D23)."""

    def __init__(self) -> None:
        self.agent = AgentConsumer.as_asgi()
        # Counted here, before the consumer (and the per-process runtime) exists: a refusal costs no more
        # than the handshake, and the first socket of a worker is accepted before the runtime is built.
        self.sockets = Counter()
        self.trusted = parse_networks(settings.HOST.trusted_proxies)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("path") != "/ws":
            await _refuse(receive, send, 4004)
            return
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin")
        host = headers.get(b"host", b"").decode("latin-1")
        # D22: DNS rebinding; checked before the socket is accepted. A present but empty Host is refused as HTTP
        # refuses it (400); only a scope without one at all (an in-process test client) goes unchecked.
        if b"host" in headers and not allowed_host(host):
            _warn_host(host)
            await _refuse(receive, send, 4003, "forbidden: host not allowed")
            return
        if origin is not None and not allowed_origin(origin.decode("latin-1"), settings.HOST, host):
            await _refuse(receive, send, 4003, "forbidden: origin not allowed")
            return
        cap = settings.HOST.max_ws_per_ip
        address = scope_address(scope, self.trusted)
        release = self.sockets.acquire([(address, cap)])
        if release is None:  # HARDENING W14: over max_ws_per_ip (per process), refused at once
            _warn_refused(address, cap)
            metrics.refused("sockets")
            await _refuse(receive, send, TOO_MANY_SOCKETS)
            return
        metrics.websocket_opened()
        try:
            await self.agent({**scope, TRANSPORT_KEY: SocketTransport.of(send)}, receive, send)
        finally:
            release()
            metrics.websocket_closed()


def _warn_host(host: str) -> None:
    global _last_host_warning
    now = time.monotonic()
    if now - _last_host_warning >= WARN_EVERY:
        _last_host_warning = now
        log.warning(
            "refusing a WebSocket upgrade for Host %r: not in ALLOWED_HOSTS (set AGENT_PUBLIC_DOMAIN "
            "or bind to the address clients use)",
            host[:100],
        )


def _warn_refused(address: str, cap: int) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= WARN_EVERY:  # one line a minute, whatever the flood
        _last_warning = now
        log.warning("refusing WebSocket connections from %s: %d open (max_ws_per_ip)", address, cap)


async def _refuse(receive: Any, send: Any, code: int, reason: str = "") -> None:
    """Accept then close with ``code`` (and ``reason``), so the client sees why (a pre-accept close is an
    HTTP 403). No frame of ours is sent and no conversation exists before the close."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": code, **({"reason": reason} if reason else {})})


def websocket_application() -> WebSocketRouter:
    return WebSocketRouter()
