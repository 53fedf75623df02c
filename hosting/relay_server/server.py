"""Our self-hostable relay (PROTOCOL §8.2) as Channels consumers.

``/ws/announce`` carries an agent: its ANNOUNCEs and its clients' traffic. ``/ws/input`` carries one
client. ``GET /api/agents/{address}`` and ``/ws/lookup`` answer lookups. The sockets never call each other:
each consumer sends to the other's channel through the Channels layer and writes only to its own socket,
so one slow socket never blocks another and no lock is held across an await.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any

from channels.exceptions import ChannelFull, StopConsumer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import InMemoryChannelLayer

from common.errors import HostError
from hosting.core.jsonwire import decode_frame
from hosting.relay import wire
from hosting.relay_server.registry import AgentRecord, Registry, StaleAnnounce
from hosting.ws.dispatch import DirectDispatchMixin
from hosting.ws.wslimits import TOO_MANY_FRAMES, FrameBudget, SocketTransport, too_many_frames, warn_flood

logger = logging.getLogger("connectonion.relay.server")

AGENT_NOT_CONNECTED = {"type": "ERROR", "message": "Agent not connected", "error": "Agent not connected"}
TO_REQUIRED = {"type": "ERROR", "message": "to required", "error": "to required"}
PING = json.dumps({"type": "PING"})
# Our own texts (P).
ANNOUNCE_FIRST = "ANNOUNCE required before any other frame"
STALE_ANNOUNCE = "Stale announce: timestamp is not newer than the last one accepted"
ADDRESS_CHANGED = "This connection already announced another address"
TOO_FREQUENT = "Too many announces: slow down"
REPLACED = "Replaced by a newer connection for this address"
SUPERSEDED = "Another connection took over this session"
RELAY_BUSY = "relay busy: frame dropped"
SEND_BUFFER_FULL_TEXT = "send buffer full: this socket is not reading what the relay sends it"  # (P)
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


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)


class _RelaySocket(DirectDispatchMixin, AsyncWebsocketConsumer):
    """Shared plumbing: the registry and options arrive through ``as_asgi(registry=…, options=…)``."""

    def __init__(self, *, registry: Registry, options: RelayOptions) -> None:
        super().__init__()
        self.registry = registry
        self.options = options

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.send(text_data=_json(obj))

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
        return {"type": "ERROR", "message": text, "error": text, **extra}


class AnnounceConsumer(_RelaySocket):
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
            await self.send_json({"type": "ERROR", "error": ANNOUNCE_FIRST})
        else:
            await self.on_reply(frame, text_data or "")

    async def on_announce(self, frame: dict[str, Any], size: int) -> None:
        loop = asyncio.get_running_loop()
        if size > wire.MAX_ANNOUNCE_CHARS:
            await self.send_json({"type": "ERROR", "error": wire.INVALID_ANNOUNCE})
            return
        try:
            fields_ = wire.verify_announce(
                frame, time.time(), self.options.signature_window, this_relay=await self.own_url()
            )
        except wire.AnnounceRejected as exc:
            if exc.error.startswith("Wrong relay"):
                logger.info("relay: refused an ANNOUNCE for %s: %s", str(frame.get("address"))[:66], exc.error)
            await self.send_json({"type": "ERROR", "error": exc.error})
            return
        if self.address is not None and fields_["address"] != self.address:
            await self.send_json({"type": "ERROR", "error": ADDRESS_CHANGED})
            return
        if self.last_announce and loop.time() - self.last_announce < self.options.announce_min_interval:
            await self.send_json({"type": "ERROR", "error": TOO_FREQUENT})
            return
        record = AgentRecord(channel=self.channel_name, last_seen=time.time(), **fields_)
        try:
            previous = await self.registry.register(record)
        except StaleAnnounce:
            await self.send_json({"type": "ERROR", "error": STALE_ANNOUNCE})
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
                logger.info(
                    "relay: agent %s expired (no ANNOUNCE for %.0f s)", self.address, self.options.agent_ttl
                )
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
        await self.send_json({"type": "ERROR", "error": REPLACED})
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


class InputConsumer(_RelaySocket):
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
            flood = too_many_frames(self.budget.rate)
            await self.refuse({**flood, "error": flood["message"]}, code=TOO_MANY_FRAMES)
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
            "text": _json(frame),
            "conn_id": self.conn_id,
            "session_id": self.session_id,
            "reply": self.channel_name,
        }
        if not await self.post(self.agent, message):
            await self.send_json(self.error(RELAY_BUSY))

    async def bind(self, frame: dict[str, Any]) -> bool:
        """Find the agent named by the first frame's ``to``; refuse and close when there is none."""
        to = frame.get("to")
        if not isinstance(to, str) or not to:
            await self.refuse(TO_REQUIRED)
            return False
        record = await self.registry.lookup(to) if wire.is_address(to) else None
        if record is None:
            await self.refuse(AGENT_NOT_CONNECTED)
            return False
        self.agent = record.channel
        self.tag_conn_id = record.routes_by_conn_id
        requested = frame.get("session_id")
        self.session_id = requested if isinstance(requested, str) and requested else str(uuid.uuid4())
        return True

    async def refuse(self, frame: dict[str, Any], code: int = 1000) -> None:
        """Send a final ERROR and close; later frames on this socket are ignored."""
        self.closing = True
        agent, self.agent = self.agent, None
        await self.send_json(frame)
        await self.close(code=code)
        if agent is not None and code != 1000:  # closed by us for its conduct: its agent hears of it now
            await self.post(agent, {"type": "relay.client_closed", "conn_id": self.conn_id,
                                    "session_id": self.session_id, "reply": self.channel_name})

    async def relay_agent_frame(self, event: dict[str, Any]) -> None:
        if not self.closing:
            await self.send_bounded(event["text"])

    async def relay_agent_gone(self, event: dict[str, Any]) -> None:
        if not self.closing:
            await self.refuse(AGENT_NOT_CONNECTED)

    async def relay_superseded(self, event: dict[str, Any]) -> None:
        if not self.closing:
            await self.refuse(self.error(SUPERSEDED))

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


class LookupConsumer(_RelaySocket):
    """``/ws/lookup`` (optional in §8.2): ``GET_AGENT`` and ``FIND`` over a socket."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = await self.decode(text_data, bytes_data)
        if frame is None:
            return
        kind = frame.get("type")
        if kind == "GET_AGENT":
            address = frame.get("address")
            record = await self.registry.lookup(address) if wire.is_address(address) else None
            if record is None:
                await self.send_json(
                    {"type": "AGENT_INFO", "agent": None, "error": "Agent not found or offline"}
                )
            else:
                await self.send_json({"type": "AGENT_INFO", "agent": record.public()})
        elif kind == "FIND":
            query = frame.get("query")
            query = query[:200] if isinstance(query, str) else ""
            found = await self.registry.find(query, 10)
            await self.send_json({"type": "AGENTS", "query": query, "agents": [r.public() for r in found]})
        else:
            await self.send_json(self.error(f"unknown message type: {str(kind)[:50]!r}"))


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path is closed with 4004 (as the host's PROTOCOL §4.1)."""

    async def connect(self) -> None:
        await self.accept()  # closing before accepting would be an HTTP 403, not a 4004 close
        await self.close(code=4004)


class _JsonHttp(DirectDispatchMixin, AsyncHttpConsumer):
    def __init__(self, *, registry: Registry, options: RelayOptions) -> None:
        super().__init__()
        self.registry = registry
        self.options = options

    async def respond(self, status: int, body: dict[str, Any]) -> None:
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        await self.send_response(status, _json(body).encode("utf-8"), headers=headers)


class AgentLookupView(_JsonHttp):
    """``GET /api/agents/{address}`` (and ``…/profile``): the record, or 404 ``agent not found``."""

    async def handle(self, body: bytes) -> None:
        if self.scope["method"] not in ("GET", "HEAD"):
            await self.respond(405, {"error": "method not allowed"})
            return
        kwargs = self.scope["url_route"]["kwargs"]
        address = kwargs["address"]
        record = await self.registry.lookup(address) if wire.is_address(address) else None
        if record is None:
            await self.respond(404, {"error": "agent not found"})
        elif kwargs.get("part") == "profile":
            await self.respond(200, {"address": record.address, "profile": record.profile})
        else:
            await self.respond(200, record.public())


class RelayHealthView(_JsonHttp):
    """``GET /health``: the relay is up, and how many agents it carries."""

    async def handle(self, body: bytes) -> None:
        await self.respond(200, {"status": "ok", "agents": await self.registry.count()})


class NotFoundView(_JsonHttp):
    async def handle(self, body: bytes) -> None:
        path = self.scope.get("path", "")
        await self.respond(
            404, {"error": "agent not found" if path.startswith("/api/agents") else "not found"}
        )
