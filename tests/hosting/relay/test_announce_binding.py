"""D28 (issue 15.6, PROTOCOL row 120b): an ANNOUNCE names the relay it is for, and our relay refuses one
signed for another, so an ANNOUNCE captured at relay A cannot register the agent at relay B."""

from __future__ import annotations

import httpx
import pytest
import websockets
from django.core.management import CommandError, call_command

from hosting.relay import wire

from .conftest import client_socket, recv_json, send_json, signed_announce, wait_until


async def _announce(base: str, message: dict) -> tuple[websockets.ClientConnection, dict]:
    ws = await websockets.connect(wire.announce_url(base))
    await send_json(ws, message)
    return ws, await recv_json(ws)


async def _status(relay, address: str) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{relay.http}/api/agents/{address}")).status_code


async def _listed(relay, address: str) -> bool:
    return await _status(relay, address) == 200


async def test_an_announce_captured_at_one_relay_is_refused_by_another(relay_factory, identity):
    a, b = await relay_factory(), await relay_factory()
    captured = signed_announce(identity, relay_base=a.base)
    agent, reply = await _announce(a.base, captured)
    assert reply == {"type": "ANNOUNCE_OK"}

    attacker, reply = await _announce(b.base, captured)  # the same frame, replayed to relay B
    assert reply["type"] == "ERROR"
    assert reply["error"] == (f"Wrong relay: this announce is signed for {a.base!r}, this relay is {b.base!r}")
    assert await _status(b, identity.address) == 404
    async with client_socket(b, {"type": "INPUT", "to": identity.address, "prompt": "my secret"}) as client:
        assert (await recv_json(client))["error"] == "Agent not connected"
    with pytest.raises(TimeoutError):  # B never routes the client's INPUT to the attacker's socket
        await recv_json(attacker, timeout=0.5)

    # A still carries the real agent.
    async with client_socket(a, {"type": "INPUT", "to": identity.address, "prompt": "hi"}):
        assert (await recv_json(agent))["prompt"] == "hi"
    for ws in (agent, attacker):
        await ws.close()


async def test_a_configured_public_url_is_the_name_checked(relay_factory, identity):
    relay = await relay_factory(public_url="wss://Relay.Example")
    refused, reply = await _announce(relay.base, signed_announce(identity, relay_base=relay.base))
    await refused.close()
    assert reply["error"].startswith("Wrong relay") and "'wss://Relay.Example'" in reply["error"]
    # D9 forms of the same name are the same relay: full announce URL, case, the scheme's default port.
    agent, reply = await _announce(
        relay.base, signed_announce(identity, relay_base="wss://relay.example:443/ws/announce")
    )
    assert reply == {"type": "ANNOUNCE_OK"}
    assert await _listed(relay, identity.address)
    await agent.close()


async def test_an_announce_without_a_relay_field_is_refused(relay, identity):
    message = signed_announce(identity, relay_base=None)
    refused, reply = await _announce(relay.base, message)
    await refused.close()
    assert reply["error"].startswith("Wrong relay: this announce is signed for None")
    assert await _status(relay, identity.address) == 404


def test_the_relay_identity_of_urls():
    assert wire.same_relay("ws://R.test", "ws://r.test:80/ws/announce/")
    assert wire.same_relay("https://r.test", "wss://r.test:443")
    assert not wire.same_relay("wss://r.test", "ws://r.test")
    assert not wire.same_relay("wss://r.test", "wss://r.test:8443")
    assert not wire.same_relay("wss://r.test/a", "wss://r.test")
    assert not wire.same_relay(None, None)
    assert not wire.same_relay("ftp://r.test", "ftp://r.test")
    assert not wire.same_relay("wss://r.test:99999", "wss://r.test:99999")


async def test_runrelay_public_url(relay_process, identity):
    relay = relay_process("--public-url", "wss://relay.example")
    refused, reply = await _announce(relay.base, signed_announce(identity, relay_base=relay.base))
    await refused.close()
    assert reply["type"] == "ERROR" and reply["error"].startswith("Wrong relay")
    agent, reply = await _announce(relay.base, signed_announce(identity, relay_base="wss://relay.example"))
    assert reply == {"type": "ANNOUNCE_OK"}
    await agent.close()
    log = relay.cwd / f"relay-{relay.port}.log"  # runrelay prints it once the relay answers
    await wait_until(lambda: "Public URL wss://relay.example" in log.read_text(), what="the public URL line")


def test_runrelay_refuses_a_public_url_that_is_not_a_relay_url():
    with pytest.raises(CommandError, match="--public-url must be a ws:// or wss:// URL"):
        call_command("runrelay", "--public-url", "relay.example")


async def test_our_link_announces_the_relay_it_dials_and_is_accepted(relay, link_factory, identity):
    await link_factory(relay.base + "/ws/announce", identity=identity)
    await wait_until(lambda: _listed(relay, identity.address), what="the agent to be listed")


# --- the fallback without --public-url: a Host header counts only when it names this relay's socket -----------


def _raw_announce(relay, host: str, message: dict) -> dict:
    """An ANNOUNCE on a socket opened by hand with the ``Host`` header ``host`` (a client writes its own)."""
    import json
    import socket

    from tests.support.nonreader import ws_frame

    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(
            f"GET /ws/announce HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert b" 101 " in head, head
        sock.sendall(ws_frame(json.dumps(message)))
        first = sock.recv(2)
        size = first[1] & 0x7F
        if size == 126:
            size = int.from_bytes(sock.recv(2), "big")
        data = b""
        while len(data) < size:
            data += sock.recv(size - len(data))
        return json.loads(data)


async def test_a_forged_host_does_not_pass_a_captured_announce_off_at_another_relay(relay_factory, identity):
    """Without ``public_url`` the relay checks against the URL it was reached at; the replayer writes relay A's
    name into its ``Host`` at relay B: B refuses it (A's port is not B's socket) and does not list the agent."""
    import asyncio

    a, b = await relay_factory(), await relay_factory()
    captured = signed_announce(identity, relay_base=a.base)
    refused = await asyncio.to_thread(_raw_announce, b, f"127.0.0.1:{a.port}", captured)
    assert refused["type"] == "ERROR" and refused["error"].startswith("Wrong relay"), refused
    assert f"127.0.0.1:{b.port}" in refused["error"]
    assert not await _listed(b, identity.address)
    # a name that resolves to B's own socket is B: an agent that dialled it is accepted
    named = signed_announce(identity, relay_base=f"ws://localhost:{b.port}")
    assert await asyncio.to_thread(_raw_announce, b, f"localhost:{b.port}", named) == {"type": "ANNOUNCE_OK"}
