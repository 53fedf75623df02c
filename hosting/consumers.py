"""The /ws consumer: transport matters only (accept, frames, close). The conversation does the rest."""

from __future__ import annotations

import os
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from hosting.dispatch import DirectDispatchMixin
from hosting.jsonwire import dumps
from hosting.protocol import Conversation
from hosting.runtime import get_runtime


class AgentConsumer(DirectDispatchMixin, AsyncWebsocketConsumer):
    conversation: Conversation
    # No per-socket channel: live events reach sockets through the process hub (and its Redis bridge),
    # so 1,000 idle sockets cost no channel-layer bookkeeping.
    channel_layer_alias = "no-layer-for-agent-sockets"


    async def connect(self) -> None:
        await self.accept(subprotocol=worker_subprotocol(self.scope))
        runtime = get_runtime()
        self.conversation = Conversation(runtime=runtime, send=self._send_frame, close=self._close_code,
                                         address=runtime.throttle.socket_address(self.scope))
        await self.conversation.start()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._send_frame({"type": "ERROR", "message": "binary frames are not supported"})
            return
        await self.conversation.handle_text(text_data)

    async def disconnect(self, code: int) -> None:
        conversation = getattr(self, "conversation", None)
        if conversation is not None:
            await conversation.close()

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=dumps(frame))

    async def _close_code(self, code: int) -> None:
        await self.close(code)


def worker_subprotocol(scope: dict[str, Any]) -> str | None:
    """Under ``--workers N``, which worker serves this socket, for a client that asks (tests, diagnostics).

    A client that offers the subprotocols ``connectonion-worker-0`` … ``-<N-1>`` gets back the one naming
    this worker (daphne sends no other handshake headers); other clients see no subprotocol, as before.
    """
    index = os.environ.get("CONNECTONION_WORKER")
    wanted = f"connectonion-worker-{index}"
    return wanted if index and wanted in (scope.get("subprotocols") or ()) else None
