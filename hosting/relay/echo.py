"""A stand-in for the host's conversation on a relay link: the ``announce`` command's default, the tests' and
the bench's. It speaks just enough of PROTOCOL §4 for a client to connect and get an answer."""

from __future__ import annotations

import uuid
from typing import Any

from common.errors import UnknownMessageType
from hosting.relay.routes import SendFrame


class EchoConversation:
    """A stand-in conversation: answers handshakes with ``CONNECTED``, ``INPUT`` with an ``OUTPUT`` whose
    ``result`` is the prompt, ``SEAL`` with an ``ERROR`` (as a host without sealing does, PROTOCOL §4.8), and
    echoes any other frame back as
    ``{"type": "ECHO", "received": …}``.

    Used by the ``announce`` command when no agent is given, by tests and by the bench.
    """

    def __init__(self, send: SendFrame, *, transport: str = "relay") -> None:
        self.send = send
        self.transport = transport
        self.session_id: str | None = None
        self.closed = False

    async def handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("CONNECT", "INIT", "ATTACH"):
            await self._connected(frame)
        elif kind == "INPUT":
            if self.session_id is None:
                await self._connected(frame)
            output = {"type": "OUTPUT", "result": frame.get("prompt"), "session_id": self.session_id}
            if frame.get("input_id") is not None:
                output["input_id"] = frame["input_id"]
            await self.send(output)
        elif kind == "SEAL":  # no sealing here: answer at once so a client falls back (PROTOCOL §4.8)
            await self.send(UnknownMessageType("SEAL").as_frame())
        elif kind not in ("PING", "PONG"):
            await self.send({"type": "ECHO", "received": frame, "session_id": self.session_id})

    async def _connected(self, frame: dict[str, Any]) -> None:
        requested = frame.get("session_id")
        self.session_id = requested if isinstance(requested, str) and requested else str(uuid.uuid4())
        await self.send({"type": "CONNECTED", "session_id": self.session_id, "status": "new"})

    async def close(self) -> None:
        self.closed = True


async def echo_legacy_input(prompt: str, input_id: str) -> str:
    """The legacy-INPUT counterpart of ``EchoConversation``: the result is the prompt."""
    return prompt
