"""The /ws consumer: transport matters only (accept, frames, close). The conversation does the rest.

Two transport limits live here, because only the transport can see them (HARDENING W12, W22):

- **Frames in.** ``ws_max_frames_per_second``: counted at daphne's own layer (``hosting.serving.ws_messages``), before a
  frame is queued for us; the same budget here covers an ASGI server without that hook. Past it: one ERROR, 4429.
- **Bytes out.** ``ws_send_buffer_mb``: what daphne's transport still holds for the client
  (``wslimits.SocketTransport``). Past it the socket's sender waits for the client to read (its live events queue
  up to the same bytes, then are read back from the replay log); a client that reads nothing of it for
  ``SEND_STALL_SECONDS`` is closed 4413 and sent nothing more. The turn goes on, finishes and is stored (turns
  never depend on their sockets, PROTOCOL §4.1).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from common.errors import BinaryFrame
from hosting.conversation.protocol import Conversation
from hosting.core.jsonwire import dumps
from hosting.core.runtime import get_runtime
from hosting.ws.dispatch import DirectDispatchMixin
from hosting.ws.wslimits import TOO_MANY_FRAMES, FrameBudget, too_many_frames, warn_flood

log = logging.getLogger("connectonion.ws")

SEND_BUFFER_FULL = 4413  # 4000 + HTTP 413: more is owed to the client than it may hold
TRANSPORT_KEY = "connectonion.transport"  # scope key: the socket's ``wslimits.SocketTransport`` (daphne, uvicorn)
SEND_STALL_SECONDS = 10.0  # over the send buffer and not one byte read for this long: close 4413
SEND_POLL = 0.05


class AgentConsumer(DirectDispatchMixin, AsyncWebsocketConsumer):
    conversation: Conversation
    # No per-socket channel: live events reach sockets through the process hub (and its Redis bridge),
    # so 1,000 idle sockets cost no channel-layer bookkeeping.
    channel_layer_alias = "no-layer-for-agent-sockets"

    async def connect(self) -> None:
        await self.accept(subprotocol=worker_subprotocol(self.scope))
        runtime = get_runtime()
        config = runtime.config
        self.budget = FrameBudget(config.ws_max_frames_per_second)
        self.transport = self.scope.get(TRANSPORT_KEY)
        self.send_limit = int(config.ws_send_buffer_mb * 1024 * 1024)
        self.shut = False
        self.conversation = Conversation(
            runtime=runtime,
            send=self._send_frame,
            close=self._close_code,
            address=runtime.throttle.socket_address(self.scope),
        )
        await self.conversation.start()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.shut:
            return  # closed by us: frames still in flight are dropped unread
        if not self.budget.take():
            warn_flood(self.conversation.address, self.budget.rate)
            await self._send_frame(too_many_frames(self.budget.rate))
            await self._shut(TOO_MANY_FRAMES)
            return
        if text_data is None:
            await self._send_frame(BinaryFrame().as_frame())
            return
        await self.conversation.handle_text(text_data)

    async def disconnect(self, code: int) -> None:
        self.shut = True  # a sender waiting for this client to read stops waiting
        conversation = getattr(self, "conversation", None)
        if conversation is not None:
            await conversation.close()

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        if self.shut:
            return
        if self.transport is not None and self.transport.waits and self.send_limit:
            await self._send_waiting(dumps(frame))
            return
        await self.send(text_data=dumps(frame))
        if self.transport is None or not self.send_limit:
            return
        owed, since = self.transport.unsent(), time.monotonic()
        while owed > self.send_limit and not self.shut:  # back-pressure: wait for the client to read
            await asyncio.sleep(SEND_POLL)
            now = self.transport.unsent()
            if now < owed:
                since = time.monotonic()
            elif time.monotonic() - since > SEND_STALL_SECONDS:
                self._warn_stalled()
                await self._shut(SEND_BUFFER_FULL)
                return
            owed = now

    async def _send_waiting(self, text: str) -> None:
        """uvicorn's send waits while its transport is over its high-water mark (flow control), so a client that
        reads nothing stalls it, and its close (which waits the same way) too: past ``SEND_STALL_SECONDS`` the
        connection is dropped. Nothing more is owed to it; the turn goes on."""
        assert self.transport is not None
        try:
            await asyncio.wait_for(self.send(text_data=text), SEND_STALL_SECONDS)
        except TimeoutError:
            self._warn_stalled()
            self.shut = True
            self.transport.abort()
            await self.conversation.close()

    def _warn_stalled(self) -> None:
        log.warning(
            "closing a WebSocket from %s: over %d bytes unsent and none read for %.0f s "
            "(ws_send_buffer_mb); its turn goes on",
            self.conversation.address or "an unknown address",
            self.send_limit,
            SEND_STALL_SECONDS,
        )

    async def _shut(self, code: int) -> None:
        """Close with ``code`` and stop this socket's conversation (not its turn). autobahn drops the
        connection, discarding what it still holds, if the client does not answer the close within 1 s."""
        self.shut = True
        await self.close(code)
        await self.conversation.close()

    async def _close_code(self, code: int) -> None:
        await self.close(code)


def worker_subprotocol(scope: dict[str, Any]) -> str | None:
    """Under ``--workers N``, which worker serves this socket, for a client that asks (tests, diagnostics).

    A client that offers the subprotocols ``connectonion-worker-0`` … ``-<N-1>`` gets back the one naming
    this worker (daphne sends no other handshake headers); other clients see no subprotocol, as before.
    """
    index = settings.HOST.worker
    wanted = f"connectonion-worker-{index}"
    return wanted if index is not None and wanted in (scope.get("subprotocols") or ()) else None
