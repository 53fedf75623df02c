"""The relay door against real processes (issue 15): our rows R12 (D28) and R13 (the /ws decoder on relayed
frames), beside HARDENING's R1-R11 (``tests/hosting/relay/``).

| # | input | expected |
|---|---|---|
| R12 | an ANNOUNCE captured at relay A (signed for A) replayed to relay B | B answers `ERROR "Wrong relay: …"`, does not list the agent, answers its clients `Agent not connected`; the replayer's socket gets no client frame |
| R13 | through our relay to a real host: a frame nested 100,000 deep, duplicate keys, a frame over the relay's cap, one over daphne's (about 4/3 of it) | the first three answered `ERROR` naming the problem (`message too large (max N bytes)`, as /ws), the socket open; the last closes that client socket only (daphne, 1009); the host's relay link and another client's conversation go on |
"""

from __future__ import annotations

import asyncio

import pytest
import websockets

from hosting.relay import wire
from tests.conftest import HostProcess
from tests.hosting.relay.conftest import (
    client_socket,
    new_identity,
    recv_json,
    relay_process,  # noqa: F401 - a fixture
    send_json,
    signed_announce,
)
from tests.hosting.relay.test_relay_decoder import NESTING, deep
from tests.support.hosts import wait_listed


async def test_r12_an_announce_replayed_at_another_relay_is_refused(relay_process):  # noqa: F811
    a, b = relay_process(), relay_process()
    identity = new_identity()
    captured = signed_announce(identity, relay_base=a.base)
    async with websockets.connect(wire.announce_url(a.base)) as agent:
        await send_json(agent, captured)
        assert await recv_json(agent) == {"type": "ANNOUNCE_OK"}
        async with websockets.connect(wire.announce_url(b.base)) as replayer:
            await send_json(replayer, captured)
            refused = await recv_json(replayer)
            assert refused["type"] == "ERROR" and refused["error"].startswith("Wrong relay")
            async with client_socket(b, {"type": "INPUT", "to": identity.address, "prompt": "secret"}) as c:
                assert (await recv_json(c))["error"] == "Agent not connected"
            with pytest.raises(TimeoutError):
                await recv_json(replayer, timeout=0.5)


async def test_r13_hostile_frames_through_our_relay_to_a_real_host(relay_process, tmp_path):  # noqa: F811
    relay = relay_process("--max-message-bytes", str(1024 * 1024))
    project = tmp_path / "project"
    project.mkdir()
    host = await asyncio.to_thread(HostProcess(project, "tests.agents:echo_factory", "--relay-url", relay.base).start)
    try:
        address = (await asyncio.to_thread(wait_listed, relay.http, _address(host)))["address"]
        async with (
            client_socket(relay, {"type": "CONNECT", "to": address}) as other,
            client_socket(relay, {"type": "CONNECT", "to": address}) as client,
        ):
            for ws in (other, client):
                assert (await _next(ws, "CONNECTED"))["type"] == "CONNECTED"
            await client.send(deep(type="INPUT", prompt="x"))
            assert (await _next(client, "ERROR"))["error"] == NESTING
            await client.send('{"type": "INPUT", "prompt": "a", "prompt": "b"}')
            assert (await _next(client, "ERROR"))["error"] == "Invalid JSON: duplicate key 'prompt'"
            await send_json(client, {"type": "INPUT", "prompt": "x" * (1024 * 1024)})  # over the relay's cap
            assert (await _next(client, "ERROR"))["error"] == f"message too large (max {1024 * 1024} bytes)"
            await send_json(client, {"type": "INPUT", "prompt": "x" * (2 * 1024 * 1024)})  # over daphne's cap
            with pytest.raises(websockets.ConnectionClosed):  # the relay's transport closes that one socket
                await _next(client, "OUTPUT", timeout=10)
            await send_json(other, {"type": "INPUT", "prompt": "still here"})
            assert (await _next(other, "OUTPUT"))["result"] == "echo: still here"
        assert "RecursionError" not in host.output()
    finally:
        await asyncio.to_thread(host.stop)


def _address(host: HostProcess) -> str:
    import httpx

    return httpx.get(host.url + "/info", timeout=10).json()["address"]


async def _next(ws, kind: str, timeout: float = 20) -> dict:
    """The next frame of type ``kind`` (or an ERROR), skipping the events and pings in between."""
    while True:
        frame = await recv_json(ws, timeout)
        if frame.get("type") in (kind, "ERROR"):
            return frame
