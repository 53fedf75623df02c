"""WebSocket routing: ``/ws`` only (anything else closes with 4004), behind our Origin rule (D22/D23)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from hosting.consumers import AgentConsumer
from hosting.network import allowed_origin


class WebSocketRouter:
    """Channels' stock origin validators refuse clients without ``Origin``; ours serves them (D23)."""

    def __init__(self) -> None:
        self.agent = AgentConsumer.as_asgi()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("path") != "/ws":
            await _refuse(receive, send, 4004)
            return
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin")
        host = headers.get(b"host", b"").decode("latin-1")
        if origin is not None and not allowed_origin(origin.decode("latin-1"), settings.HOST, host):
            await _refuse(receive, send, 4003)
            return
        await self.agent(scope, receive, send)


async def _refuse(receive: Any, send: Any, code: int) -> None:
    """Accept then close with ``code``, so the client sees the reason (a pre-accept close is an HTTP 403)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": code})


def websocket_application() -> WebSocketRouter:
    return WebSocketRouter()
