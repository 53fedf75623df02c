"""Our relay (PROTOCOL §8.2, HARDENING R9/R11) against raw agent and client sockets."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
import websockets

from hosting.relay import wire

from .conftest import (
    announced,
    client_socket,
    new_identity,
    recv_json,
    send_json,
    signed_announce,
    wait_until,
)

NOT_CONNECTED = {"type": "ERROR", "message": "Agent not connected", "error": "Agent not connected"}


async def lookup(relay, address: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"{relay.http}/api/agents/{address}")


async def test_a_valid_announce_is_accepted_and_listed(relay, identity):
    agent = await announced(
        relay,
        identity,
        endpoints=["http://localhost:8000", "ws://localhost:8000/ws"],
        summary="I translate",
        profile={"alias": "translator", "tools": ["translate"]},
        relay_base=relay.base,
    )
    response = await lookup(relay, identity.address.upper().replace("0X", "0x"))
    assert response.status_code == 200
    body = response.json()
    assert body["address"] == identity.address
    assert body["summary"] == "I translate"
    assert body["endpoints"] == ["http://localhost:8000", "ws://localhost:8000/ws"]
    assert body["relay"] == relay.base
    assert body["online"] is True
    assert body["profile"] == {"alias": "translator", "tools": ["translate"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", body["last_seen"])  # ISO, no zone
    await agent.close()


async def refused(relay, message) -> dict:
    async with websockets.connect(wire.announce_url(relay.base)) as ws:
        await send_json(ws, message)
        return await recv_json(ws)


async def test_a_bad_signature_is_refused_and_not_registered(relay, identity):
    message = signed_announce(identity)
    message["summary"] = "changed after signing"
    assert await refused(relay, message) == {"type": "ERROR", "error": "Invalid signature"}
    assert (await lookup(relay, identity.address)).status_code == 404


async def test_an_announce_whose_address_is_not_the_signer_is_refused(relay, identity):
    other = new_identity()
    message = signed_announce(identity)
    message["address"] = other.address
    assert await refused(relay, message) == {"type": "ERROR", "error": "Invalid signature"}
    assert (await lookup(relay, other.address)).status_code == 404


async def test_an_announce_301_seconds_old_is_refused(relay, identity):
    reply = await refused(relay, signed_announce(identity, now=time.time() - 301))
    assert reply["type"] == "ERROR" and "expired" in reply["error"]
    assert (await lookup(relay, identity.address)).status_code == 404


async def test_a_summary_over_1000_characters_is_refused(relay, identity):
    message = signed_announce(identity)
    message.pop("signature")
    message["summary"] = "x" * 1001
    message["signature"] = identity.sign_hex(wire.announce_text(message))
    assert await refused(relay, message) == {"type": "ERROR", "error": "Summary too long (max 1000 chars)"}


async def test_a_replayed_older_announce_is_refused(relay, identity):
    now = time.time()
    agent = await announced(relay, identity, now=now)
    assert (await refused(relay, signed_announce(identity, now=now - 5)))["type"] == "ERROR"
    assert (await refused(relay, signed_announce(identity, now=now)))["type"] == "ERROR"  # the same one again
    await agent.close()


async def test_a_newer_announce_socket_replaces_the_older(relay, identity):
    now = time.time()
    old = await announced(relay, identity, now=now - 2)
    new = await announced(relay, identity, now=now)
    assert (await recv_json(old))["type"] == "ERROR"
    await asyncio.wait_for(old.wait_closed(), 5)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address}):
        forwarded = await recv_json(new)
    assert forwarded["type"] == "CONNECT"
    await new.close()


async def test_an_agent_is_removed_after_the_expiry_without_announce(relay_factory, identity):
    relay = await relay_factory(agent_ttl=0.5)
    agent = await announced(relay, identity)
    assert (await lookup(relay, identity.address)).status_code == 200
    await wait_until(lambda: _status(relay, identity.address, 404), timeout=5, what="the record to expire")
    await agent.close()


async def _status(relay, address, status):
    return (await lookup(relay, address)).status_code == status


async def test_an_agent_is_removed_when_its_socket_closes(relay, identity):
    agent = await announced(relay, identity)
    await agent.close()
    await wait_until(lambda: _status(relay, identity.address, 404), what="the record to go")


@pytest.mark.parametrize("address", ["0x1234", "x" * 10_000, "%2e%2e%2fadmin", "0x" + "g" * 64])
async def test_lookup_of_garbage_is_404_json(relay, address):
    response = await lookup(relay, address)
    assert response.status_code == 404
    assert response.json() == {"error": "agent not found"}
    assert response.headers["content-type"] == "application/json"


async def test_lookup_of_a_path_escape_is_404_json(relay):
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{relay.http}/api/agents/../../etc/passwd")
    assert response.status_code == 404 and "error" in response.json()


async def test_a_client_naming_an_unknown_agent_gets_agent_not_connected_and_is_closed(relay):
    async with client_socket(relay, {"type": "CONNECT", "to": "0x" + "ab" * 32}) as ws:
        assert await recv_json(ws) == NOT_CONNECTED
        await asyncio.wait_for(ws.wait_closed(), 10)  # the relay closes it (a deadline, not a latency figure)


async def test_a_first_frame_without_to_is_refused_and_closed(relay):
    async with client_socket(relay, {"type": "CONNECT"}) as ws:
        assert await recv_json(ws) == {"type": "ERROR", "message": "to required", "error": "to required"}
        await asyncio.wait_for(ws.wait_closed(), 1)


async def test_client_frames_are_forwarded_with_session_id_and_conn_id(relay, identity):
    agent = await announced(relay, identity)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address, "extra": [1, "é"]}) as client:
        first = await recv_json(agent)
        assert first["type"] == "CONNECT" and first["extra"] == [1, "é"] and first["to"] == identity.address
        assert len(first["session_id"]) == 36 and len(first["conn_id"]) == 36
        await send_json(client, {"type": "INPUT", "prompt": "hi"})
        second = await recv_json(agent)
        assert (second["session_id"], second["conn_id"]) == (first["session_id"], first["conn_id"])
        await send_json(agent, {"type": "OUTPUT", "result": "hello", "conn_id": first["conn_id"], "session_id": "app"})
        assert await recv_json(client) == {
            "type": "OUTPUT",
            "result": "hello",
            "conn_id": first["conn_id"],
            "session_id": "app",
        }
    closing = await recv_json(agent)
    assert closing == {"type": "close", "session_id": first["session_id"], "conn_id": first["conn_id"]}
    await agent.close()


async def test_a_first_frame_session_id_becomes_the_routing_session_id(relay, identity):
    agent = await announced(relay, identity)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address, "session_id": "s-1"}):
        assert (await recv_json(agent))["session_id"] == "s-1"
    await agent.close()


async def test_replies_reach_only_their_own_client(relay, identity):
    agent = await announced(relay, identity)
    async with (
        client_socket(relay, {"type": "CONNECT", "to": identity.address}) as one,
        client_socket(relay, {"type": "CONNECT", "to": identity.address}) as two,
    ):
        a, b = await recv_json(agent), await recv_json(agent)
        assert a["conn_id"] != b["conn_id"]
        await send_json(agent, {"type": "X", "n": 1, "conn_id": a["conn_id"], "session_id": a["session_id"]})
        await send_json(agent, {"type": "X", "n": 2, "conn_id": b["conn_id"], "session_id": b["session_id"]})
        await send_json(agent, {"type": "X", "n": 3, "conn_id": "nobody"})  # unknown route: dropped
        got = {(await recv_json(one))["n"], (await recv_json(two))["n"]}
        assert got == {1, 2}
    await agent.close()


async def test_without_conn_id_support_frames_carry_only_session_id_and_the_newer_socket_takes_over(relay, identity):
    agent = websockets.connect(wire.announce_url(relay.base))
    agent = await agent
    message = signed_announce(identity, relay_base=relay.base)
    message.pop("signature")
    message["relay_features"] = []
    message["signature"] = identity.sign_hex(wire.announce_text(message))
    await send_json(agent, message)
    assert await recv_json(agent) == {"type": "ANNOUNCE_OK"}
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address, "session_id": "s"}) as old:
        assert "conn_id" not in await recv_json(agent)
        async with client_socket(relay, {"type": "CONNECT", "to": identity.address, "session_id": "s"}) as new:
            await recv_json(agent)
            assert (await recv_json(old))["type"] == "ERROR"
            await send_json(agent, {"type": "OUTPUT", "result": "r", "session_id": "s"})
            assert (await recv_json(new))["result"] == "r"
    await agent.close()


async def test_when_the_agent_goes_its_clients_get_agent_not_connected(relay, identity):
    agent = await announced(relay, identity)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address}) as client:
        await recv_json(agent)
        await agent.close()
        assert await recv_json(client) == NOT_CONNECTED
        await asyncio.wait_for(client.wait_closed(), 2)


async def test_the_relay_pings_clients(relay_factory, identity):
    relay = await relay_factory(client_ping_interval=0.2)
    agent = await announced(relay, identity)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address}) as client:
        assert await recv_json(client, skip_ping=False) == {"type": "PING"}
        await send_json(client, {"type": "PONG"})
        await recv_json(agent)
        assert (await recv_json(agent))["type"] == "PONG"  # forwarded like everything else
    await agent.close()


async def test_garbage_from_a_client_is_answered_with_an_error_and_the_socket_stays_open(relay, identity):
    agent = await announced(relay, identity)
    async with client_socket(relay) as client:
        await client.send("not json")
        assert (await recv_json(client))["message"].startswith("Invalid JSON")
        await client.send(b"\x00\x01")
        assert (await recv_json(client))["message"].startswith("Invalid JSON")
        await client.send("[1, 2]")
        assert (await recv_json(client))["message"] == "message must be a JSON object"  # the /ws text
        await send_json(client, {"type": "CONNECT", "to": identity.address})
        assert (await recv_json(agent))["type"] == "CONNECT"
    await agent.close()


async def test_an_agent_must_announce_before_anything_else(relay):
    async with websockets.connect(wire.announce_url(relay.base)) as ws:
        await send_json(ws, {"type": "OUTPUT", "conn_id": "x"})
        assert (await recv_json(ws))["type"] == "ERROR"
        await ws.send("{bad")
        assert (await recv_json(ws))["type"] == "ERROR"


async def test_lookup_socket_answers_get_agent_and_find(relay, identity):
    agent = await announced(relay, identity, summary="I translate text")
    async with websockets.connect(relay.base + "/ws/lookup") as ws:
        await send_json(ws, {"type": "GET_AGENT", "address": identity.address})
        assert (await recv_json(ws))["agent"]["summary"] == "I translate text"
        await send_json(ws, {"type": "GET_AGENT", "address": "0x" + "cd" * 32})
        assert await recv_json(ws) == {
            "type": "AGENT_INFO",
            "agent": None,
            "error": "Agent not found or offline",
        }
        await send_json(ws, {"type": "FIND", "query": "TRANSLATE"})
        found = await recv_json(ws)
        assert [a["address"] for a in found["agents"]] == [identity.address]
    await agent.close()


async def test_an_unknown_websocket_path_is_closed_with_4004(relay):
    async with websockets.connect(relay.base + "/ws/other") as ws:
        await asyncio.wait_for(ws.wait_closed(), 2)
        assert ws.close_code == 4004
