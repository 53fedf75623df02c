"""The /ws consumer: transport matters only (accept, frames, close). The conversation does the rest."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from hosting.jsonwire import dumps
from hosting.protocol import Conversation
from hosting.runtime import get_runtime


class AgentConsumer(AsyncWebsocketConsumer):
    conversation: Conversation

    async def connect(self) -> None:
        await self.accept()
        self.conversation = Conversation(runtime=get_runtime(), send=self._send_frame, close=self._close_code)
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
