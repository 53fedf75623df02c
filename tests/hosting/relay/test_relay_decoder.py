"""Issue 15.7: relayed frames go through the decoder of ``/ws`` (size cap, strict JSON with duplicate keys
refused, depth limit) on both sides: our relay server and the agent's relay link. One hostile frame is
answered or dropped by itself; the socket, the link and every other relayed conversation go on."""

from __future__ import annotations

import json
import logging

import pytest

from hosting.conversation.seal import sealed_size
from hosting.core.config import HostConfig
from hosting.relay.echo import EchoConversation
from hosting.relay.link import RelayLink

from .conftest import (
    announced,
    client_socket,
    new_identity,
    recv_json,
    send_json,
    wait_until,
)

DEPTH = 100_000
NESTING = "Invalid JSON: nesting deeper than 64"


def deep(depth: int = DEPTH, **fields: object) -> str:
    """An object whose ``x`` is ``depth`` nested lists, with ``fields`` first (readable tags)."""
    head = json.dumps(fields)[:-1] + (", " if fields else "")
    return head + '"x": ' + "[" * depth + "]" * depth + "}"


# --- our relay server ------------------------------------------------------------------------------


async def test_a_client_frame_nested_100000_deep_is_refused_and_the_socket_goes_on(relay, identity):
    agent = await announced(relay, identity)
    to = identity.address
    async with client_socket(relay, {"type": "CONNECT", "to": to}) as other, client_socket(relay) as first:
        other_conn = (await recv_json(agent))["conn_id"]
        await first.send(deep(type="CONNECT", to=to))  # before the socket is bound to an agent
        refused = await recv_json(first)
        assert refused["type"] == "ERROR" and refused["error"] == NESTING
        await send_json(first, {"type": "CONNECT", "to": to})
        assert (await recv_json(agent))["type"] == "CONNECT"

        await first.send(deep(type="INPUT", prompt="x"))  # after: refused, never forwarded
        assert (await recv_json(first))["error"] == NESTING
        await first.send('{"type": "INPUT", "prompt": "a", "prompt": "b"}')
        assert (await recv_json(first))["error"] == "Invalid JSON: duplicate key 'prompt'"
        await send_json(first, {"type": "INPUT", "prompt": "still here"})
        assert (await recv_json(agent))["prompt"] == "still here"

        # The other conversation goes on both ways.
        await send_json(other, {"type": "INPUT", "prompt": "other"})
        assert (await recv_json(agent))["prompt"] == "other"
        await send_json(agent, {"type": "OUTPUT", "result": "r", "conn_id": other_conn, "session_id": "s"})
        assert (await recv_json(other))["result"] == "r"
    await agent.close()


async def test_an_agent_frame_nested_100000_deep_is_refused_and_its_routes_go_on(relay, identity):
    agent = await announced(relay, identity)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address}) as client:
        forwarded = await recv_json(agent)
        await agent.send(deep(conn_id=forwarded["conn_id"], type="OUTPUT"))
        assert (await recv_json(agent))["error"] == NESTING  # to the agent; nothing reaches the client
        await send_json(agent, {"type": "CONNECTED", "conn_id": forwarded["conn_id"], "session_id": "s"})
        assert (await recv_json(client))["type"] == "CONNECTED"
    await agent.close()


async def test_our_relay_caps_each_frame(relay_factory, identity):
    relay = await relay_factory(max_message_bytes=100_000)
    agent = await announced(relay, identity)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address}) as client:
        await recv_json(agent)
        await send_json(client, {"type": "INPUT", "prompt": "x" * 200_000})
        assert (await recv_json(client))["error"] == "message too large (max 100000 bytes)"
        await send_json(client, {"type": "INPUT", "prompt": "small"})
        assert (await recv_json(agent))["prompt"] == "small"
    await agent.close()


async def test_a_flood_of_frames_through_our_relay_reaches_the_agent_in_order(relay_factory, link_factory, identity):
    relay = await relay_factory(max_frames_per_second=0)  # 500 at once: past the client frame budget of /ws
    await link_factory(relay.base, identity=identity)
    async with client_socket(relay, {"type": "CONNECT", "to": identity.address}) as client:
        assert (await recv_json(client))["type"] == "CONNECTED"
        for n in range(500):
            await send_json(client, {"type": "INPUT", "prompt": str(n)})
        answers = [await recv_json(client) for _ in range(500)]
        assert [a["result"] for a in answers] == [str(n) for n in range(500)]
        await send_json(client, {"type": "INPUT", "prompt": "y" * 5_000_000})  # a big frame, under the caps
        assert len((await recv_json(client, timeout=30))["result"]) == 5_000_000


# --- the agent's relay link -------------------------------------------------------------------------


async def test_the_link_refuses_hostile_frames_one_by_one_and_keeps_every_other_conversation(
    scripted_relay, link_factory, caplog
):
    caplog.set_level(logging.WARNING, logger="connectonion.relay")
    scripted = await scripted_relay(reply_announce={"type": "ANNOUNCE_OK"})
    link = await link_factory(scripted.base, frame_limit=50_000)
    ws = scripted.sockets[0]
    await ws.send(json.dumps({"type": "CONNECT", "conn_id": "c1", "session_id": "s1"}))
    await wait_until(lambda: scripted.frames("CONNECTED"), what="CONNECTED on c1")

    await ws.send(deep(conn_id="c2", session_id="s2", type="INPUT"))  # no parser can read its tags: dropped
    await ws.send(deep(65, conn_id="c3", session_id="s3", type="INPUT"))  # past 64: an ERROR to c3
    await ws.send('{"conn_id": "c4", "session_id": "s4", "type": "INPUT", "prompt": "a", "prompt": "b"}')
    await ws.send(json.dumps({"conn_id": "c5", "type": "INPUT", "prompt": "x" * 60_000}))  # over the cap
    await ws.send('{"conn_id": "c6", "conn_id": "c1", "type": "INPUT", "prompt": "spoof"}')  # ambiguous tag
    await ws.send(json.dumps({"type": "INPUT", "conn_id": "c1", "session_id": "s1", "prompt": "hi"}))

    await wait_until(lambda: scripted.frames("OUTPUT"), what="c1's OUTPUT")
    assert [f["result"] for f in scripted.frames("OUTPUT")] == ["hi"]
    errors = {f.get("conn_id"): f["message"] for f in scripted.frames("ERROR")}
    assert errors == {"c3": NESTING, "c4": "Invalid JSON: duplicate key 'prompt'"}
    assert len(scripted.connections) == 1 and link.state == "connected"  # the link never dropped
    assert link.conversations == 1  # no conversation was started for a refused frame
    dropped = [r.getMessage() for r in caplog.records if "dropped a frame" in r.getMessage()]
    assert len(dropped) == 3


def test_a_host_link_takes_relay_frames_larger_than_its_cap_without_dropping():
    """A client frame the relay tags past the host's cap is refused by itself, not by closing the link
    (websockets' own max_size stays at the relay's budget)."""
    config = HostConfig(max_request_mb=1)
    link = RelayLink.from_config(config, new_identity(), conversation_factory=EchoConversation)
    assert link.plain_limit == config.max_request_bytes + 4096  # a plain frame
    assert link.frame_limit == sealed_size(config.max_request_bytes) + 4096  # a sealed one (PROTOCOL §4.8)
    assert link.max_size >= 256 * 1024 * 1024


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "NaN", '{"a": NaN}', "\ufeff{}"])
async def test_the_link_ignores_frames_that_are_not_strict_json_objects(raw, scripted_relay, link_factory):
    scripted = await scripted_relay(reply_announce={"type": "ANNOUNCE_OK"})
    link = await link_factory(scripted.base)
    await scripted.sockets[0].send(raw)
    await scripted.sockets[0].send(json.dumps({"type": "INPUT", "conn_id": "c", "prompt": "after"}))
    await wait_until(lambda: scripted.frames("OUTPUT"), what="the next frame's answer")
    assert len(scripted.connections) == 1 and link.state == "connected"
