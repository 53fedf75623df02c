"""Our relay's agent side (PROTOCOL §8.2): ``/ws/announce`` carries one agent, its ANNOUNCEs and the replies
it routes back to its clients' sockets (``hosting.relay_server.clients``) through the Channels layer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from common.errors import (
    AddressChanged,
    AnnounceNotNewer,
    AnnounceRequired,
    AnnouncesTooFrequent,
    ReplacedByNewer,
    announce_frame,
)
from hosting.relay import wire
from hosting.relay_server.registry import AgentRecord, StaleAnnounce
from hosting.relay_server.server import RelaySocket

logger = logging.getLogger("connectonion.relay.server")


class AnnounceConsumer(RelaySocket):
    """``/ws/announce``: one agent. Verifies each ANNOUNCE, registers it, and routes its replies."""

    role = "agent"

    async def connect(self) -> None:
        self.address: str | None = None
        self.by_conn: dict[str, str] = {}  # conn_id -> client channel
        self.by_session: dict[str, str] = {}  # routing session_id -> client channel
        self.last_announce = 0.0
        self.expiry: asyncio.Task[None] | None = None
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = await self.decode(text_data, bytes_data)
        if frame is None:
            return
        if frame.get("type") == "ANNOUNCE":
            await self.on_announce(frame, len(text_data or ""))
        elif self.address is None:
            await self.send_json(announce_frame(AnnounceRequired()))
        else:
            await self.on_reply(frame, text_data or "")

    async def on_announce(self, frame: dict[str, Any], size: int) -> None:
        loop = asyncio.get_running_loop()
        if size > wire.MAX_ANNOUNCE_CHARS:
            await self.send_json(announce_frame(wire.INVALID_ANNOUNCE))
            return
        try:
            fields_ = wire.verify_announce(
                frame, time.time(), self.options.signature_window, this_relay=await self.own_url()
            )
        except wire.AnnounceRejected as exc:
            if exc.error.startswith("Wrong relay"):
                logger.info("relay: refused an ANNOUNCE for %s: %s", str(frame.get("address"))[:66], exc.error)
            await self.send_json(announce_frame(exc.error))
            return
        if self.address is not None and fields_["address"] != self.address:
            await self.send_json(announce_frame(AddressChanged()))
            return
        if self.last_announce and loop.time() - self.last_announce < self.options.announce_min_interval:
            await self.send_json(announce_frame(AnnouncesTooFrequent()))
            return
        record = AgentRecord(channel=self.channel_name, last_seen=time.time(), **fields_)
        try:
            previous = await self.registry.register(record)
        except StaleAnnounce:
            await self.send_json(announce_frame(AnnounceNotNewer()))
            return
        if self.address is None:
            logger.info("relay: agent %s announced", record.address)
        self.address = record.address
        self.features = record.relay_features
        self.last_announce = loop.time()
        if previous is not None:
            await self.post(previous, {"type": "relay.replaced"})
        if self.expiry is None:
            self.expiry = asyncio.create_task(self.expire())
        await self.send_json({"type": "ANNOUNCE_OK"})

    async def own_url(self) -> str:
        """This relay's URL for D28: ``public_url`` when configured, else the URL it was reached at. A client
        writes its own ``Host``, so that header counts only when it names the socket the connection arrived on
        (its port, and its address or a name that resolves to it); otherwise the socket's own address is the
        URL, and an ANNOUNCE captured at another relay cannot be passed off with that relay's ``Host``.
        Behind a proxy or a port mapping, set ``public_url``."""
        if self.options.public_url:
            return self.options.public_url
        scheme = self.scope.get("scheme") or "ws"
        server = self.scope.get("server")
        headers = dict(self.scope.get("headers") or ())
        host = headers.get(b"host", b"").decode("latin-1")
        if host and (server is None or await wire.names_socket(scheme, host, server)):
            return f"{scheme}://{host}"
        if server is None:
            return f"{scheme}://"
        name, port = server
        return f"{scheme}://[{name}]:{port}" if ":" in str(name) else f"{scheme}://{name}:{port}"

    async def expire(self) -> None:
        """Drop the registration ``agent_ttl`` after the last ANNOUNCE (PROTOCOL §8.2 rule 3).

        The socket stays open and its clients keep their routes: an agent that announces again is back.
        """
        loop = asyncio.get_running_loop()
        while True:
            left = self.last_announce + self.options.agent_ttl - loop.time()
            if left > 0:
                await asyncio.sleep(left)
                continue
            if self.address is not None:
                await self.registry.unregister(self.address, self.channel_name)
                logger.info("relay: agent %s expired (no ANNOUNCE for %.0f s)", self.address, self.options.agent_ttl)
            self.expiry = None
            return

    async def on_reply(self, frame: dict[str, Any], text: str) -> None:
        """A frame for a client: route by ``conn_id``, else ``session_id``; deliver the text as it came."""
        conn_id, session_id = frame.get("conn_id"), frame.get("session_id")
        channel = None
        if isinstance(conn_id, str):
            channel = self.by_conn.get(conn_id)
        if channel is None and isinstance(session_id, str):
            channel = self.by_session.get(session_id)
        if channel is not None:
            await self.post(channel, {"type": "relay.agent_frame", "text": text})

    # -- messages from client sockets ---------------------------------------------------------------

    async def relay_client_frame(self, event: dict[str, Any]) -> None:
        conn_id, session_id, reply = event["conn_id"], event["session_id"], event["reply"]
        if conn_id not in self.by_conn:
            self.by_conn[conn_id] = reply
            previous = self.by_session.get(session_id)
            self.by_session[session_id] = reply
            if previous and previous != reply and not self.routes_by_conn_id:
                # Without conn_id support two sockets cannot share a session id: the newer takes over (§8.2).
                self.by_conn = {c: ch for c, ch in self.by_conn.items() if ch != previous}
                await self.post(previous, {"type": "relay.superseded"})
        await self.send_bounded(event["text"])

    async def relay_client_closed(self, event: dict[str, Any]) -> None:
        conn_id, session_id, reply = event["conn_id"], event["session_id"], event["reply"]
        if self.by_conn.pop(conn_id, None) is None:
            return
        if self.by_session.get(session_id) == reply:
            del self.by_session[session_id]
        await self.send_json({"type": "close", "session_id": session_id, "conn_id": conn_id})

    async def relay_replaced(self, event: dict[str, Any]) -> None:
        await self.send_json(announce_frame(ReplacedByNewer()))
        await self.close(code=4000)

    @property
    def routes_by_conn_id(self) -> bool:
        return "conn_id" in getattr(self, "features", ())

    async def disconnect(self, code: int) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        if self.address is not None:
            await self.registry.unregister(self.address, self.channel_name)
            logger.info("relay: agent %s disconnected (%s)", self.address, code)
        for channel in set(self.by_conn.values()) | set(self.by_session.values()):
            await self.post(channel, {"type": "relay.agent_gone"})
        self.by_conn, self.by_session = {}, {}
