"""Our relay's client side (PROTOCOL §8.2): ``/ws/input`` carries one client socket, bound to one agent by its
first frame's ``to``; its frames go to the agent's socket (``hosting.relay_server.agents``) through the layer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

from common.errors import AgentNotConnected, HostError, RelayBusy, Superseded, TooManyFrames, ToRequired, relay_frame
from hosting.relay import wire
from hosting.relay_server.server import RelaySocket, to_json
from hosting.ws.wslimits import TOO_MANY_FRAMES, FrameBudget, warn_flood

PING = json.dumps({"type": "PING"})


class InputConsumer(RelaySocket):
    """``/ws/input``: one client socket, bound to one agent by its first frame's ``to``. Held to the frame
    budget and send buffer of /ws (``max_frames_per_second``: ERROR and close 4429; ``send_buffer_bytes``)."""

    role = "client"

    async def connect(self) -> None:
        self.agent: str | None = None
        self.conn_id = str(uuid.uuid4())
        self.session_id: str | None = None
        self.tag_conn_id = False
        self.closing = False
        self.budget = FrameBudget(self.options.max_frames_per_second)
        await self.accept()
        self.pinger = asyncio.create_task(self.ping())

    async def ping(self) -> None:
        """A JSON ``PING`` every interval (PROTOCOL §8.2 rule 4); the client's PONG is forwarded as usual."""
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(self.options.client_ping_interval)
                await self.send(text_data=PING)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        if not self.budget.take():
            warn_flood((self.scope.get("client") or [None])[0], self.budget.rate)
            await self.refuse(TooManyFrames(self.budget.rate), code=TOO_MANY_FRAMES)
            return
        frame = await self.decode(text_data, bytes_data)
        if frame is None:
            return
        if self.agent is None and not await self.bind(frame):
            return
        assert self.agent is not None and self.session_id is not None
        frame["session_id"] = self.session_id
        if self.tag_conn_id:
            frame["conn_id"] = self.conn_id
        message = {
            "type": "relay.client_frame",
            "text": to_json(frame),
            "conn_id": self.conn_id,
            "session_id": self.session_id,
            "reply": self.channel_name,
        }
        if not await self.post(self.agent, message):
            await self.send_json(relay_frame(RelayBusy()))

    async def bind(self, frame: dict[str, Any]) -> bool:
        """Find the agent named by the first frame's ``to``; refuse and close when there is none."""
        to = frame.get("to")
        if not isinstance(to, str) or not to:
            await self.refuse(ToRequired())
            return False
        record = await self.registry.lookup(to) if wire.is_address(to) else None
        if record is None:
            await self.refuse(AgentNotConnected())
            return False
        self.agent = record.channel
        self.tag_conn_id = record.routes_by_conn_id
        requested = frame.get("session_id")
        self.session_id = requested if isinstance(requested, str) and requested else str(uuid.uuid4())
        return True

    async def refuse(self, error: HostError, code: int = 1000) -> None:
        """Send ``error`` as the final ERROR (relay form, with ``error`` beside ``message``) and close; later frames
        on this socket are ignored."""
        self.closing = True
        agent, self.agent = self.agent, None
        await self.send_json(relay_frame(error))
        await self.close(code=code)
        if agent is not None and code != 1000:  # closed by us for its conduct: its agent hears of it now
            await self.post(
                agent,
                {
                    "type": "relay.client_closed",
                    "conn_id": self.conn_id,
                    "session_id": self.session_id,
                    "reply": self.channel_name,
                },
            )

    async def relay_agent_frame(self, event: dict[str, Any]) -> None:
        if not self.closing:
            await self.send_bounded(event["text"])

    async def relay_agent_gone(self, event: dict[str, Any]) -> None:
        if not self.closing:
            await self.refuse(AgentNotConnected())

    async def relay_superseded(self, event: dict[str, Any]) -> None:
        if not self.closing:
            await self.refuse(Superseded())

    async def disconnect(self, code: int) -> None:
        self.pinger.cancel()
        if self.agent is not None and self.session_id is not None:
            await self.post(
                self.agent,
                {
                    "type": "relay.client_closed",
                    "conn_id": self.conn_id,
                    "session_id": self.session_id,
                    "reply": self.channel_name,
                },
            )
