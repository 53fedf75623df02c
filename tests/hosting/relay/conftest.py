"""Relay fixtures: our relay served in-process (uvicorn) or as a real ``manage.py runrelay`` process,
scripted relays for the agent side, fresh identities, and a polling helper."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from nacl.signing import SigningKey
from websockets.asyncio.server import ServerConnection, serve

from hosting.relay import wire
from hosting.relay.echo import EchoConversation, echo_legacy_input
from hosting.relay.link import RelayLink
from hosting.relay_server.registry import MemoryRegistry
from hosting.relay_server.routing import relay_application
from hosting.relay_server.server import RelayOptions
from tests.support.hosts import RelayProcess, stop_all
from tests.support.wait import wait_until
from trust.identity import AgentIdentity

FAST_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)


def new_identity() -> AgentIdentity:
    return AgentIdentity.from_signing_key(SigningKey.generate())


async def recv_json(ws: Any, timeout: float = 5.0, *, skip_ping: bool = True) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if not (skip_ping and frame.get("type") == "PING"):
            return frame


async def send_json(ws: Any, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


def signed_announce(identity: Any, *, now: float | None = None, **fields: Any) -> dict[str, Any]:
    return wire.build_announce(
        identity,
        endpoints=fields.pop("endpoints", []),
        summary=fields.pop("summary", "test agent"),
        profile=fields.pop("profile", None),
        relay_base=fields.pop("relay_base", "ws://relay.test"),
        now=time.time() if now is None else now,
    )


async def announced(relay: Any, identity: AgentIdentity, *, max_size: int | None = None, **fields: Any) -> Any:
    """An agent's announce socket on ``relay`` that the relay has accepted (ANNOUNCE_OK)."""
    ws = await websockets.connect(wire.announce_url(relay.base), max_size=max_size)
    fields.setdefault("relay_base", relay.base)
    await send_json(ws, signed_announce(identity, **fields))
    assert await recv_json(ws) == {"type": "ANNOUNCE_OK"}
    return ws


class AsgiServer:
    """An ASGI app on a free loopback port, served by uvicorn inside the test's event loop."""

    def __init__(self, app: Any, *, bind: str = "127.0.0.1") -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind((bind, 0))
        self.port = self.sock.getsockname()[1]
        self.base = f"ws://{bind}:{self.port}"
        self.http = f"http://{bind}:{self.port}"
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", ws="websockets-sansio", ws_max_size=16 * 1024 * 1024
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> AsgiServer:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        await wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        self.sock.close()


class InProcessRelay(AsgiServer):
    """Our relay ASGI app with its own registry."""

    def __init__(self, options: RelayOptions) -> None:
        self.options = options
        self.registry = MemoryRegistry(ttl=options.agent_ttl, window=options.signature_window)
        super().__init__(relay_application(options, self.registry))


@pytest.fixture
async def relay_factory() -> AsyncIterator[Callable[..., Awaitable[InProcessRelay]]]:
    started: list[InProcessRelay] = []

    async def start(**options: Any) -> InProcessRelay:
        options.setdefault("client_ping_interval", 30.0)
        relay = await InProcessRelay(RelayOptions(**options)).start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.stop()


@pytest.fixture
async def relay(relay_factory) -> InProcessRelay:
    return await relay_factory()


@pytest.fixture
def identity() -> AgentIdentity:
    return new_identity()


@pytest.fixture
async def link_factory() -> AsyncIterator[Callable[..., Awaitable[RelayLink]]]:
    """Start ``RelayLink``s (echo conversations unless told otherwise); all are stopped afterwards."""
    links: list[RelayLink] = []

    async def start(relay_url: str, *, wait: bool = True, **options: Any) -> RelayLink:
        options.setdefault("conversation_factory", EchoConversation)
        options.setdefault("legacy_input", echo_legacy_input)
        options.setdefault("backoff", FAST_BACKOFF)
        options.setdefault("stable_after", 0.5)
        identity = options.pop("identity", None) or new_identity()
        link = RelayLink(identity, relay_url=relay_url, **options)
        links.append(link)
        await link.start()
        if wait:
            await wait_until(lambda: link.state == "connected", what="the link to connect")
        return link

    yield start
    for link in links:
        await link.stop()


@contextlib.asynccontextmanager
async def client_socket(relay: InProcessRelay | str, first: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    base = relay if isinstance(relay, str) else relay.base
    async with websockets.connect(wire.input_url(base), max_size=64 * 1024 * 1024) as ws:
        if first is not None:
            await send_json(ws, first)
        yield ws


class ScriptedRelay:
    """A stand-in relay for the agent side: records every frame the link sends, sends what a test says.

    ``on_connect(ws)`` runs for every new announce socket (default: nothing); frames are in ``frames``
    (one list per connection) as parsed JSON.
    """

    def __init__(
        self,
        on_connect: Callable[[ServerConnection], Awaitable[None]] | None = None,
        *,
        reply_announce: dict[str, Any] | None = None,
        max_size: int | None = 16 * 1024 * 1024,
    ) -> None:
        self.on_connect = on_connect
        self.reply_announce = reply_announce
        self.max_size = max_size
        self.connections: list[list[dict[str, Any]]] = []
        self.sockets: list[ServerConnection] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.attempts: list[float] = []
        self.server: Any = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def announces(self) -> list[dict[str, Any]]:
        return [f for frames in self.connections for f in frames if f.get("type") == "ANNOUNCE"]

    def frames(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [f for frames in self.connections for f in frames if kind is None or f.get("type") == kind]

    async def _handler(self, ws: ServerConnection) -> None:
        self.attempts.append(time.monotonic())
        received: list[dict[str, Any]] = []
        self.connections.append(received)
        self.sockets.append(ws)
        if self.on_connect is not None:
            self.tasks.append(asyncio.create_task(self.on_connect(ws)))
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                frame = json.loads(raw)
                received.append(frame)
                if frame.get("type") == "ANNOUNCE" and self.reply_announce is not None:
                    await ws.send(json.dumps(self.reply_announce))

    async def start(self, port: int = 0) -> ScriptedRelay:
        self.server = await serve(self._handler, "127.0.0.1", port, max_size=self.max_size, ping_interval=None)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def scripted_relay() -> AsyncIterator[Callable[..., Awaitable[ScriptedRelay]]]:
    started: list[ScriptedRelay] = []

    async def start(*args: Any, **kwargs: Any) -> ScriptedRelay:
        relay = await ScriptedRelay(*args, **kwargs).start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.stop()


@pytest.fixture
def relay_process(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    started: list[RelayProcess] = []

    def start(*args: str, port: int | None = None) -> RelayProcess:
        process = RelayProcess(*args, port=port, cwd=tmp_path).start()
        started.append(process)
        return process

    yield start
    stop_all(started)
