"""The client's errors and its sealed socket (PROTOCOL §4.8): ``send``/``recv`` of plain text over sealed frames."""

from __future__ import annotations

import json
from typing import Any

from common.errors import HostError, SealRejected
from hosting.conversation import seal
from hosting.core.jsonwire import loads_object


class RemoteAgentError(ConnectionError):
    """The agent (or the relay) answered with an ERROR; ``frame`` is that frame."""

    def __init__(self, message: str, frame: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.frame = frame or {}


class AgentNotConnected(RemoteAgentError):
    """The relay does not carry this agent right now."""


class AnswerRequired(RemoteAgentError):
    """The agent asked the user something and no ``on_ask_user`` callback was given."""


class SealedSocket:
    """A ``websockets`` connection whose ``send``/``recv`` carry sealed frames (PROTOCOL §4.8).

    A relay's own ``PING`` and ``ERROR`` (no ``c``: it holds no key) are handed up as they came; anything else
    must open, or ``recv`` raises ``RemoteAgentError`` (``sealed frame rejected: …``).
    """

    def __init__(self, ws: Any, layer: seal.SealLayer) -> None:
        self.ws = ws
        self.layer = layer

    async def send(self, text: str) -> None:
        await self.ws.send(json.dumps(self.layer.wrap_text(text)))

    async def recv(self) -> str:
        raw = await self.ws.recv()
        try:  # the strict decoder, as for any frame (issue 15.7)
            frame = loads_object(raw if isinstance(raw, str) else "", what="message")
        except HostError:
            raise RemoteAgentError(SealRejected("not a JSON object").message) from None
        if frame.get("type") in seal.RELAY_CONTROL and "c" not in frame:
            return raw
        try:
            return self.layer.open(frame)
        except SealRejected as exc:
            raise RemoteAgentError(exc.message) from None

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> SealedSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
