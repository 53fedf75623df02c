"""Sealed sockets end to end with real processes (PROTOCOL §4.8, D19):

* the released 1.9.2 client with keys and our host bound to 127.0.0.2 (not a name it treats as loopback),
  announced with that address on our relay: it stays on the direct socket, sealed, for a conversation that
  remembers, an approval and an upload (unsealed, it would drop that socket and go through the relay);
* through our relay, the released client and ours, sealed: what passes between the clients and the relay holds
  no plaintext of the prompt or the answer;
* our client against the released host (``released_host.py``), sealed, with quick consecutive turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from connectonion import address as co_address
from connectonion import connect as released_connect
from websockets.asyncio.server import serve

from hosting.client import connect as our_connect
from tests.conftest import NO_TURN_LIMITS, HostProcess, ServerProcess, free_port, host_env
from tests.support.hosts import RelayProcess, wait_listed
from tests.support.uploads import data_url

from .conftest import new_keys

pytestmark = [pytest.mark.slow]

HERE = Path(__file__).resolve().parent
LAN = "127.0.0.2"


class LanHost(HostProcess):
    """Our host bound to 127.0.0.2, announcing that address on a relay."""

    @property
    def url(self) -> str:
        return f"http://{LAN}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LAN}:{self.port}/ws"


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    process = RelayProcess(cwd=tmp_path_factory.mktemp("sealrelay")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def lan_host(relay, tmp_path_factory):
    folder = tmp_path_factory.mktemp("seallan")
    host = LanHost(folder, *NO_TURN_LIMITS, "--host", LAN, "--relay-url", relay.base).start()
    address = httpx.get(host.url + "/info").json()["address"]
    assert wait_listed(relay.http, address)["endpoints"] == [host.url, host.ws_url]
    host.address = address  # type: ignore[attr-defined]
    yield host
    host.stop()


@pytest.fixture(scope="module")
def relayed_host(relay, tmp_path_factory):
    """Our host announcing no endpoints: every turn goes through the relay."""
    folder = tmp_path_factory.mktemp("sealrelayed")
    (folder / ".co").mkdir()
    (folder / ".co" / "host.yaml").write_text("announce_loopback: false\n")
    host = HostProcess(folder, *NO_TURN_LIMITS, "--relay-url", relay.base).start()
    address = httpx.get(host.url + "/info").json()["address"]
    assert wait_listed(relay.http, address)["endpoints"] == []
    host.address = address  # type: ignore[attr-defined]
    yield host
    host.stop()


# -- the released client, direct to a LAN address ---------------------------------------------------------------


def test_released_client_stays_on_the_sealed_direct_socket_to_a_lan_address(relay, lan_host):
    agent = released_connect(lan_host.address, relay_url=relay.base, keys=co_address.generate())
    direct = lan_host.ws_url
    first = agent.input("my name is Ada", timeout=60)
    assert first.done and agent._resolved_endpoint == direct  # an unsealed plaintext LAN socket is forgotten
    second = agent.input("what is my name", timeout=60)
    assert second.text == "Your name is Ada." and agent._resolved_endpoint == direct
    assert agent.current_session["turn"] == 2

    asked: list[dict] = []

    def approve(event: dict) -> dict:
        asked.append(event)
        return {"approved": True, "scope": "once"}

    note = agent.input("save a note: milk", timeout=60, on_approval=approve)
    assert note.text == "Done: note saved: milk." and asked[0]["tool"] == "save_note"
    assert agent._resolved_endpoint == direct

    data = data_url("text/plain", b"the lan secret is 42")
    read = agent.input("read the file", timeout=60, files=[{"name": "lan.txt", "data": data}])
    assert "the lan secret is 42" in read.text and agent._resolved_endpoint == direct


def test_our_client_stays_on_the_sealed_direct_socket_to_a_lan_address(relay, lan_host):
    agent = our_connect(lan_host.address, relay_url=relay.base, keys=new_keys())
    agent.input("my name is Ada")
    assert agent.input("what is my name") == "Your name is Ada."
    assert (agent.transport, agent.sealed) == ("direct", True)


# -- through our relay: the relay sees only ciphertext ----------------------------------------------------------


class RecordingProxy:
    """A WebSocket hop in front of the relay's ``/ws/input``: records every frame each way, verbatim."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.frames: list[tuple[str, str]] = []  # ("up" client->relay | "down" relay->client, text)
        self.server: Any = None
        self.base = ""

    async def _pump(self, source: Any, sink: Any, direction: str) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in source:
                self.frames.append((direction, text))
                await sink.send(text)
        await sink.close()

    async def _handler(self, client: Any) -> None:
        async with websockets.connect(self.upstream + client.request.path, max_size=None) as relay:
            await asyncio.gather(self._pump(client, relay, "up"), self._pump(relay, client, "down"))

    async def start(self) -> RecordingProxy:
        self.server = await serve(self._handler, "127.0.0.1", 0, max_size=None, ping_interval=None)
        self.base = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    def assert_sealed(self, *secrets: str) -> None:
        """Every frame but the SEAL handshake and the relay's own PINGs is SEALED; no secret is readable."""
        assert self.frames, "nothing went through the proxy"
        for direction, text in self.frames:
            for secret in secrets:
                assert secret not in text, (direction, text[:300])
            kind = json.loads(text).get("type")
            allowed = {"up": ("SEAL", "SEALED"), "down": ("SEALED_OK", "SEALED", "PING")}[direction]
            assert kind in allowed, (direction, text[:300])
        assert [d for d, t in self.frames if json.loads(t)["type"] == "SEAL"], "no SEAL went through"


@pytest.mark.parametrize("client", ["released", "ours"])
async def test_through_our_relay_the_conversation_is_sealed(relay, relayed_host, client):
    proxy = await RecordingProxy(relay.base).start()
    try:
        if client == "released":
            agent = released_connect(relayed_host.address, relay_url=proxy.base, keys=co_address.generate())
            await asyncio.to_thread(agent.input, "my name is Zebedee", timeout=60)
            answer = (await asyncio.to_thread(agent.input, "what is my name", timeout=60)).text
        else:
            agent = our_connect(relayed_host.address, relay_url=proxy.base, keys=new_keys())
            await agent.ainput("my name is Zebedee")
            answer = await agent.ainput("what is my name")
            assert (agent.transport, agent.sealed) == ("relay", True)
        assert answer == "Your name is Zebedee."
        proxy.assert_sealed("Zebedee", "what is my name", "Your name is")
    finally:
        await proxy.stop()


# -- our client against the released host ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def released_host(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sealreleased")
    port = free_port()
    process = ServerProcess()
    env = host_env(CO_TEST_CO_DIR=str(folder / "agent-co"), HOME=str(folder))
    process.launch(
        [sys.executable, str(HERE / "released_host.py"), "--port", str(port), "--trust", "open"],
        cwd=folder,
        env=env,
        log_path=folder / "released-host.log",
        ready_url=f"http://127.0.0.1:{port}/health",
        timeout=60,
        what="released host",
    )
    process.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield process
    process.stop()


def test_our_client_seals_to_the_released_host_with_quick_consecutive_turns(released_host):
    agent = our_connect(released_host.url, keys=new_keys())
    assert agent.input("my name is Ada") == "you said: my name is Ada"
    assert agent.input("what is my name") == "your name is Ada"  # within a second of the first
    assert agent.input("add 2 and 3") == "the sum is 5"
    assert (agent.transport, agent.sealed) == ("direct", True)
